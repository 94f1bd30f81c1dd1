"""Near-duplicate photos: the same picture re-saved, cropped a little, or shot in a burst.

Byte-identical copies are caught by their sha256 in :mod:`pipeline.inputs.dataset`; these are
the others. Each photo's perceptual hash (``imagehash.phash``, 64 bits, taken from the upright
picture by :mod:`pipeline.inputs.photo_checks`) is compared with every other one of the subject
(50 photos: 1,225 pairs, microseconds). The photos are taken best first: the largest picture,
then a lossless one (PNG) over a JPEG or WebP, then the largest file (the least compressed
copy: a re-save at a lower quality is smaller, and of burst shots the sharper one usually
takes more bytes), then the sharpest, then the first by name; each is used unless it is
within :data:`MAX_DISTANCE` bits of one already used, which it is then named as a copy of
(the nearest). So every photo left out is truly close to its twin, and the ends of a slow
turn shot in a burst (each photo close to the next, the first far from the last) are both
used: grouping by chains kept one photo of the whole turn. Sharpness alone would pick
wrongly: JPEG artefacts raise the Laplacian's variance, so a re-save at quality 70 can score
sharper than its original.
Measured on scikit-image's astronaut: a re-save at quality 70 is 0 bits away, a 4-pixel crop 2,
a turn of one degree 4 and of two degrees 8; different photos 32 or more.

    >>> [(d.name, d.twin) for d in find_near_duplicates([a, b, c])]
    [('IMG_2.jpg', 'IMG_1.jpg')]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_DISTANCE", "HashedPhoto", "NearDuplicate", "find_near_duplicates"]

#: Bits of 64 two photos' perceptual hashes may differ by and still be one picture.
MAX_DISTANCE: Final = 10


@dataclass(frozen=True, slots=True)
class HashedPhoto:
    """A photo as this module needs it: its name, hash (hex), sharpness, pixels (as shown),
    bytes on disk, and whether its format loses nothing (PNG)."""

    name: str
    phash: str
    sharpness: float
    pixels: int = 0
    size_bytes: int = 0
    lossless: bool = False


@dataclass(frozen=True, slots=True)
class NearDuplicate:
    """``name`` is left out: it is ``distance`` bits from ``twin``, which is used."""

    name: str
    twin: str
    distance: int

    @property
    def reason(self) -> str:
        return (
            f"{self.name} is a near-duplicate of {self.twin} (the same picture re-saved, "
            f"cropped or shot a moment apart): only {self.twin}, the larger or less "
            "compressed, is used; replace it with a different photo"
        )


def _preference(photo: HashedPhoto) -> tuple[int, bool, int, float, str]:
    """Sorts the copy to keep first (see the module's notes)."""
    return (-photo.pixels, not photo.lossless, -photo.size_bytes, -photo.sharpness, photo.name)


def find_near_duplicates(
    photos: Sequence[HashedPhoto], max_distance: int = MAX_DISTANCE
) -> list[NearDuplicate]:
    """The photos to leave out, each named with the twin kept for it, sorted by name."""
    hashes = [int(photo.phash, 16) for photo in photos]
    kept: list[int] = []
    found: list[NearDuplicate] = []
    for index in sorted(range(len(photos)), key=lambda i: _preference(photos[i])):
        near = [((hashes[index] ^ hashes[k]).bit_count(), position)
                for position, k in enumerate(kept)]
        distance, position = min(near, default=(max_distance + 1, 0))
        if distance > max_distance:
            kept.append(index)
        else:
            found.append(NearDuplicate(photos[index].name, photos[kept[position]].name,
                                       distance))
    return sorted(found, key=lambda duplicate: duplicate.name)
