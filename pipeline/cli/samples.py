"""Sample subject folders for the demo: drawn faces and objects, plus deliberately bad files.

    >>> create_samples(Path("demo/inbox"), count=3)
    ['alice', 'bob', 'teapot', 'mixed_bag', 'photo_gate', 'too_many']

Everything is drawn with Pillow from a seeded random generator, so the same arguments give
byte-identical folders (and so the same dataset fingerprints). Pictures are 512x512 flat
drawings (:mod:`pipeline.cli.drawings`), 5 to 20 KB each, saved as a mix of PNG, JPEG and
WebP; some carry a misleading extension (a PNG named ``.jpg``) to show that formats are
judged by content.

The good subjects pass the photo gate as they are: each portrait shows one face the detector
finds, and the photos of one subject differ in pose, framing, clothes and background enough
that none is taken for a re-save of another (a drawing too close to an earlier one is drawn
again). The objects' folders hold a ``subject.toml`` naming what they are
(``class_word = "teapot"``), so no face is asked of them.

``mixed_bag`` holds one file for each way a file can be rejected next to a few good ones, so
it still trains, with warnings; ``photo_gate`` does the same for the photo gate's verdicts
(blurry, two faces, no face, animated, a near-duplicate, a link, a stray text file) and its
conversions (a photo stored sideways, a CMYK photo); ``too_many`` holds 51 photos of one
person and is rejected as a whole.
"""

from __future__ import annotations

import io
import os
import random
import struct
import zlib
from pathlib import Path
from typing import Final

import imagehash
from PIL import Image, ImageDraw, ImageFilter

from pipeline.api.contract import MAX_TRAINING_IMAGES
from pipeline.cli.drawings import Drawing, Look, background, draw_face, draw_object, draw_person
from pipeline.errors import ConfigError
from pipeline.inputs.near_duplicates import MAX_DISTANCE

__all__ = [
    "BAD_SUBJECT",
    "GATE_SUBJECT",
    "OBJECT_SUBJECTS",
    "SUBJECT_NAMES",
    "TOO_MANY_SUBJECT",
    "create_samples",
]

SUBJECT_NAMES: Final = ("alice", "bob", "teapot", "carol", "dave", "vase", "erin", "frank", "mug")
OBJECT_SUBJECTS: Final = frozenset({"teapot", "vase", "mug"})
BAD_SUBJECT: Final = "mixed_bag"
GATE_SUBJECT: Final = "photo_gate"
TOO_MANY_SUBJECT: Final = "too_many"
SAMPLE_SIZE: Final = 512
#: Under the 512x512 training size (a warning), with the face still large enough to find.
SMALL_SIZE: Final = 200
#: Drawings of one subject stay this many bits of perceptual hash further apart than the
#: photo gate's near-duplicate line, so that JPEG and WebP artefacts cannot bring them under.
_HASH_MARGIN: Final = 6
#: Tries for a distinct drawing; then the last is kept. About one drawing in four is drawn
#: again, mostly late in ``too_many`` (at most 13 tries seen, seeds 0-2 with count=12).
_MAX_REDRAWS: Final = 30
#: A Gaussian blur of this radius takes a drawn face under the gate's sharpness floor.
_BLUR_RADIUS: Final = 5
#: libwebp's effort: 2 encodes about twice as fast as the default 4, a few percent larger.
_WEBP_METHOD: Final = 2

#: (format written, extension used): the second and fifth lie about what they are.
_SAVE_PLAN: Final = (
    ("png", "png"),
    ("png", "jpg"),
    ("jpeg", "jpg"),
    ("webp", "webp"),
    ("webp", "png"),
    ("jpeg", "jpeg"),
)


def _encode(image: Image.Image, fmt: str, *, quality: int | None = None) -> bytes:
    buffer = io.BytesIO()
    if fmt == "jpeg":
        image.save(buffer, "JPEG", quality=quality or 85)
    elif fmt == "webp":
        image.save(buffer, "WEBP", quality=quality or 80, method=_WEBP_METHOD)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


class _Album:
    """Drawings of one subject, each kept far (in perceptual hash) from those before it."""

    def __init__(self, name: str, seed: int, drawing: Drawing) -> None:
        self._identity = random.Random(f"{seed}:{name}:identity")
        self._traits = self._identity.getstate()
        self._seed = f"{seed}:{name}"
        self._drawing = drawing
        self._hashes: list[imagehash.ImageHash] = []

    @property
    def identity(self) -> random.Random:
        """The subject's identity generator, reset: for a drawing made outside the album."""
        self._identity.setstate(self._traits)
        return self._identity

    def draw(self, key: str | int, size: int = SAMPLE_SIZE) -> Image.Image:
        """The drawing for ``key``; drawn again (deterministically) while it is within reach
        of the gate's near-duplicate line from one drawn before."""
        for attempt in range(_MAX_REDRAWS):
            rng = random.Random(f"{self._seed}:{key}" + (f":{attempt}" if attempt else ""))
            image = self._drawing(self.identity, rng, size)
            phash = imagehash.phash(image)
            if all(phash - other > MAX_DISTANCE + _HASH_MARGIN for other in self._hashes):
                break
        self._hashes.append(phash)
        return image


def _subject_names(count: int) -> list[str]:
    names = list(SUBJECT_NAMES[:count])
    names += [f"subject_{index:02d}" for index in range(len(names) + 1, count + 1)]
    return names


def _drawing_for(name: str) -> Drawing:
    return draw_object if name in OBJECT_SUBJECTS else draw_face


def _write_subject(
    folder: Path,
    name: str,
    images: int,
    seed: int,
    album: _Album | None = None,
    plan: tuple[tuple[str, str], ...] = _SAVE_PLAN,
) -> list[Path]:
    album = album or _Album(name, seed, _drawing_for(name))
    folder.mkdir(parents=True, exist_ok=True)
    if name in OBJECT_SUBJECTS:
        (folder / "subject.toml").write_text(
            f'# An object, not a person: no face is asked of its photos.\nclass_word = "{name}"\n',
            encoding="utf-8",
        )
    written = []
    for index in range(images):
        fmt, extension = plan[index % len(plan)]
        path = folder / f"{name}_{index + 1:02d}.{extension}"
        path.write_bytes(_encode(album.draw(index), fmt))
        written.append(path)
    return written


def _write_bad_subject(folder: Path, seed: int) -> None:
    album = _Album(BAD_SUBJECT, seed, draw_face)
    good = _write_subject(folder, BAD_SUBJECT, 3, seed, album)
    rng = random.Random(f"{seed}:{BAD_SUBJECT}:bad")
    face = draw_face(album.identity, rng, SAMPLE_SIZE)
    jpeg = _encode(face, "jpeg")
    gif = io.BytesIO()
    face.convert("P").save(gif, "GIF")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "animation.jpg").write_bytes(gif.getvalue())
    (folder / "notes.png").write_text("these are notes, not a photo\n", encoding="utf-8")
    (folder / "IMG_0001.jpg").write_bytes(
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + rng.randbytes(64)
    )
    (folder / "panorama.png").write_bytes(_png_header(30_000, 20_000))
    (folder / f"{good[0].stem}_copy{good[0].suffix}").write_bytes(good[0].read_bytes())
    (folder / "small.png").write_bytes(_encode(album.draw("small", SMALL_SIZE), "png"))
    (folder / "old").mkdir(exist_ok=True)
    (folder / "old" / "old_photo.png").write_bytes(_encode(face, "png"))
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


def _two_people(album: _Album, seed: int) -> Image.Image:
    rng = random.Random(f"{seed}:{GATE_SUBJECT}:two")
    image = background(rng, SAMPLE_SIZE)
    draw = ImageDraw.Draw(image)
    friend = Look.of(random.Random(f"{seed}:{GATE_SUBJECT}:friend"))
    for look, cx in ((Look.of(album.identity), 150), (friend, 362)):
        draw_person(draw, look, rng, cx, 220, 0.58)
    return image


def _write_gate_subject(folder: Path, seed: int) -> None:
    """Six good photos, and one photo for each verdict of the photo gate."""
    album = _Album(GATE_SUBJECT, seed, draw_face)
    good = _write_subject(folder, GATE_SUBJECT, 6, seed, album)
    (folder / "blurred.jpg").write_bytes(
        _encode(album.draw("blurred").filter(ImageFilter.GaussianBlur(_BLUR_RADIUS)), "jpeg")
    )
    (folder / "two_faces.png").write_bytes(_encode(_two_people(album, seed), "png"))
    back = random.Random(f"{seed}:{GATE_SUBJECT}:back")
    (folder / "no_face.png").write_bytes(
        _encode(draw_face(album.identity, back, SAMPLE_SIZE, facing=False), "png")
    )
    frames = [album.draw(f"frame{index}") for index in range(3)]
    animated = io.BytesIO()
    frames[0].save(animated, "WEBP", save_all=True, append_images=frames[1:], duration=400,
                   quality=80)
    (folder / "animated.webp").write_bytes(animated.getvalue())
    # A PNG: re-saving a JPEG adds artefacts that the gate's sharpness takes for detail.
    twin = good[0]
    with Image.open(twin) as picture:
        resaved = _encode(picture.convert("RGB"), "jpeg", quality=70)
    (folder / f"{twin.stem}_resaved.jpg").write_bytes(resaved)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to show it
    sideways = io.BytesIO()
    album.draw("sideways").transpose(Image.Transpose.ROTATE_90).save(
        sideways, "JPEG", quality=85, exif=exif.tobytes()
    )
    (folder / "sideways.jpg").write_bytes(sideways.getvalue())
    (folder / "cmyk.jpg").write_bytes(_encode(album.draw("cmyk").convert("CMYK"), "jpeg"))
    (folder / "notes.txt").write_text("shot at the lake, June\n", encoding="utf-8")
    try:
        os.symlink(good[2].name, folder / f"link_to_{good[2].name}")
    except (OSError, NotImplementedError):
        pass  # no symlinks here (Windows without the privilege): the folder shows the rest


def create_samples(
    inbox: Path,
    *,
    count: int = 3,
    images_per_subject: int = 12,
    seed: int = 0,
    include_bad: bool = True,
) -> list[str]:
    """Create ``count`` good subject folders (and, with ``include_bad``, three bad ones).

    Returns the names of the folders created, good ones first. Refuses (``ConfigError``) to
    write into a subject folder that already exists and is not empty, so it never mixes its
    pictures with real ones.
    """
    names = _subject_names(count)
    extra = [BAD_SUBJECT, GATE_SUBJECT, TOO_MANY_SUBJECT] if include_bad else []
    for name in names + extra:
        folder = inbox / name
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ConfigError(
                f"{folder} already exists and is not empty: samples go into a fresh inbox; "
                "remove it or choose another folder"
            )
    inbox.mkdir(parents=True, exist_ok=True)
    for name in names:
        _write_subject(inbox / name, name, images_per_subject, seed)
    if include_bad:
        _write_bad_subject(inbox / BAD_SUBJECT, seed)
        _write_gate_subject(inbox / GATE_SUBJECT, seed)
        # One photo over the limit, all JPEG: the quickest to write, and formats are shown above.
        _write_subject(inbox / TOO_MANY_SUBJECT, TOO_MANY_SUBJECT, MAX_TRAINING_IMAGES + 1, seed,
                       plan=(("jpeg", "jpg"),))
    return names + extra
