"""Decoding a photo for analysis, and the bytes the service should get for it.

:func:`open_photo` opens png, jpeg, webp, HEIC/HEIF (through ``pillow-heif``) and AVIF by
content. :func:`to_analysis_rgb` decodes it once, reduced where the format allows (JPEG draft
mode: libjpeg scales while it decodes), first frame only, as 8-bit RGB, turned upright by its
EXIF orientation. :func:`conversions_needed` says in words what must change before the
service can take it, and :func:`upload_bytes` makes that change: rotated, converted to 8-bit
RGB, HEIC/AVIF to JPEG, EXIF/XMP/GPS stripped unless ``keep_metadata``. A photo that needs no
change keeps its exact bytes; one whose only change is its metadata loses it without being
re-encoded (:mod:`pipeline.inputs.photo_metadata` drops JPEG segments, PNG chunks and WebP
chunks as they are), or is encoded again when its stripped bytes would not decode the same.

    >>> photo = upload_bytes(Path("alice/IMG_0001.HEIC").read_bytes())
    >>> photo.format, photo.changes
    ('jpeg', ('HEIC to jpeg', 'metadata removed'))
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Final, Literal

import numpy as np
from PIL import Image

from pipeline.inputs.photo_metadata import strip_metadata

__all__ = [
    "MAX_FULL_DECODES",
    "METADATA_REMOVED",
    "PhotoFormat",
    "UploadPhoto",
    "bit_depth",
    "conversions_needed",
    "frame_count",
    "metadata_strippable",
    "open_photo",
    "orientation_of",
    "photo_format",
    "pillow_quiet",
    "to_analysis_rgb",
    "upload_bytes",
]

PhotoFormat = Literal["png", "jpeg", "webp", "heif", "avif"]
UploadFormat = Literal["png", "jpeg", "webp"]

_PIL_FORMATS: Final = ("JPEG", "PNG", "WEBP", "HEIF", "AVIF")
_ORIENTATION_TAG: Final = 0x0112
_TRANSPOSE: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: Modes the service takes as they are; anything else is converted.
_PLAIN_MODES: Final = frozenset({"RGB", "RGBA", "L", "LA"})
#: JPEG draft mode asks for at least this long side: libjpeg then picks 1/2, 1/4 or 1/8.
_DRAFT_SHARE: Final = 0.75
JPEG_QUALITY: Final = 95
#: The change named when a photo's EXIF, XMP and GPS blocks are taken out before the upload.
METADATA_REMOVED: Final = "metadata removed"

#: Photos decoded whole for the upload at once in the whole process (the upload stage
#: derives them on up to ``upload_concurrency`` threads): converting a 40-megapixel photo
#: holds some 300 MB.
MAX_FULL_DECODES: Final = 2
_full_decodes = threading.BoundedSemaphore(MAX_FULL_DECODES)

_heif_lock = threading.Lock()
_heif_registered = False


def _register_heif() -> None:
    """Teach Pillow HEIC/HEIF once, on first use (never at import time)."""
    global _heif_registered
    with _heif_lock:
        if not _heif_registered:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _heif_registered = True


_quiet_lock = threading.Lock()


@contextmanager
def pillow_quiet() -> Iterator[None]:
    """Pillow's warnings silenced while it reads a photo's header and metadata blocks.

    It warns once per damaged EXIF tag (a hostile block printed 5,000 lines for one photo),
    and under an error filter for warnings the same call raises instead, so the gate would
    judge differently there; what it skips is worded by the gate or does not matter. The
    warnings filter is the process's: the lock keeps two threads from restoring each
    other's."""
    with _quiet_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def open_photo(fp: IO[bytes]) -> Image.Image:
    """``fp`` opened (not decoded) as one of png, jpeg, webp, HEIF or AVIF, by content."""
    _register_heif()
    with pillow_quiet():
        return Image.open(fp, formats=_PIL_FORMATS)


def photo_format(image: Image.Image) -> PhotoFormat:
    """The format of an opened photo: a multi-picture JPEG (Pillow's "MPO", as phones write
    them with a depth map or an HDR gain map after the picture) is a JPEG."""
    fmt = (image.format or "png").lower()
    return "jpeg" if fmt == "mpo" else fmt  # type: ignore[return-value]


def frame_count(image: Image.Image) -> int:
    """The frames of an animation; 1 for a still photo, an MPO's extra pictures included
    (they are not frames: the upload drops them with the metadata)."""
    if image.format == "MPO":
        return 1
    return int(getattr(image, "n_frames", 1))


def bit_depth(head: bytes) -> int:
    """Bits per channel of a PNG from its first 25 bytes; 8 for everything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) > 24 and head[12:16] == b"IHDR":
        return int(head[24])
    return 8


def orientation_of(image: Image.Image) -> int:
    """The EXIF orientation (1-8; 1 when absent or nonsense)."""
    try:
        with pillow_quiet():
            value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a damaged EXIF block says nothing about the pixels
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _eight_bit_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB (alpha laid on white); 16-bit grey scaled, not clipped.

    Each step makes one full-size copy at most: a 40-megapixel picture is 120 MB as RGB."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return _grey_to_rgb(image)
    if image.mode in ("RGBA", "LA", "P", "PA", "1"):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba)
        return white
    return image.convert("RGB")


#: Rows of a 16-bit picture converted at once: the float64 arithmetic on a whole
#: 40-megapixel picture took a gigabyte.
_GREY_ROWS: Final = 256


def _grey_to_rgb(image: Image.Image) -> Image.Image:
    _, brightest = image.getextrema()
    top = 65535.0 if float(brightest) > 255 else 255.0  # type: ignore[arg-type]
    width, height = image.size
    grey = np.empty((height, width), np.uint8)
    for row in range(0, height, _GREY_ROWS):
        end = min(height, row + _GREY_ROWS)
        values = np.asarray(image.crop((0, row, width, end))).astype(np.float64)
        grey[row:end] = (values * (255.0 / top)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


#: Modes Pillow reduces (box average) as they are; a palette or 16-bit picture is
#: converted first, band by band.
_REDUCIBLE: Final = frozenset({"L", "LA", "RGBA", "CMYK", "I", "F", "YCbCr", "RGBX"})
#: Rows of output reduced at once: Pillow premultiplies a whole RGBA picture (a copy) to
#: reduce it, so a 40-megapixel one is reduced in bands.
_BAND_ROWS: Final = 64


def _reduced_for(image: Image.Image, side: int) -> Image.Image:
    """``image`` box-reduced by the factor its thumbnail would be reduced by (to no less
    than twice ``side``), before it is converted to RGB: a 40-megapixel RGBA or palette
    picture is never converted whole. An RGB picture is left to the thumbnail."""
    factor = int(max(image.size) / side / 2.0)
    if factor < 2 or image.mode == "RGB":
        return image
    mode = image.mode if image.mode in _REDUCIBLE else (
        "RGBA" if image.mode in ("P", "PA", "1") else "I")
    width, height = image.size
    reduced = Image.new(mode, (-(-width // factor), -(-height // factor)))
    band = factor * _BAND_ROWS
    for top in range(0, height, band):
        part = image.crop((0, top, width, min(height, top + band)))
        reduced.paste(part.convert(mode).reduce(factor), (0, top // factor))
    return reduced


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE.get(orientation)
    return image if method is None else image.transpose(method)


def to_analysis_rgb(image: Image.Image, orientation: int, side: int) -> Image.Image:
    """The first frame of ``image`` decoded as 8-bit RGB, upright, at most ``side`` px on its
    long side; a JPEG is decoded reduced (draft mode). Read ``image.size`` before: a draft
    changes it."""
    width, height = image.size
    if image.format in ("JPEG", "MPO") and max(width, height) > side:
        scale = side * _DRAFT_SHARE / max(width, height)
        image.draft(None, (max(1, int(width * scale)), max(1, int(height * scale))))
    image.load()
    rgb = _upright(_eight_bit_rgb(_reduced_for(image, side)), orientation)
    if rgb is image:  # the caller closes ``image``: what is returned must outlive it
        rgb = rgb.copy()
    if max(rgb.size) > side:
        rgb.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return rgb


def conversions_needed(
    fmt: str, mode: str, depth: int, orientation: int, frames: int
) -> tuple[str, ...]:
    """What must change before the service can take the photo, in words; empty if nothing."""
    changes: list[str] = []
    if fmt in ("heif", "avif"):
        changes.append(f"{'HEIC' if fmt == 'heif' else 'AVIF'} to jpeg")
    if orientation != 1:
        changes.append(f"rotated upright (EXIF orientation {orientation})")
    if frames > 1:
        changes.append(f"animated: first of {frames} frames")
    if mode == "CMYK":
        changes.append("CMYK colours to RGB")
    elif depth > 8 or mode.startswith("I") or mode == "F":
        changes.append(f"{depth if depth > 8 else 16} bits per channel to 8")
    elif mode in ("P", "PA"):
        changes.append("palette colours to RGB")
    elif mode not in _PLAIN_MODES:
        changes.append(f"{mode} pixels to RGB")
    return tuple(changes)


@dataclass(frozen=True, slots=True)
class UploadPhoto:
    """What to send: ``data`` as ``format``; ``changes`` empty when ``data`` is the file."""

    data: bytes
    format: UploadFormat
    changes: tuple[str, ...]


def metadata_strippable(data: bytes, fmt: str) -> bool:
    """Whether ``data`` (a png, jpeg or webp) holds metadata :func:`upload_bytes` removes:
    exactly when removing it changes the bytes."""
    return fmt in ("png", "jpeg", "webp") and strip_metadata(data, fmt) is not data


def upload_bytes(data: bytes, *, keep_metadata: bool = False) -> UploadPhoto:
    """The bytes the service should get for the photo ``data`` (see the module's notes).

    Raises Pillow's errors for a photo that does not decode.
    """
    with open_photo(io.BytesIO(data)) as image:
        fmt = photo_format(image)
        orientation = orientation_of(image)
        changes = conversions_needed(
            fmt, image.mode, bit_depth(data[:32]), orientation, frame_count(image)
        )
        if changes:
            with _full_decodes:
                return _reencoded(image, fmt, orientation, changes, keep_metadata)
        target: UploadFormat = fmt  # type: ignore[assignment]  # no change: png, jpeg or webp
        if keep_metadata:
            return UploadPhoto(data, target, ())
        stripped = strip_metadata(data, target)
        if stripped is data:
            return UploadPhoto(data, target, ())
        with _full_decodes:
            if stripped is not None and _same_picture(stripped, image):
                return UploadPhoto(stripped, target, (METADATA_REMOVED,))
            # A file the stripper cannot walk, or whose stripped bytes no longer decode the
            # same: its picture is encoded again, which keeps no metadata.
            return _reencoded(image, fmt, orientation, (), keep_metadata=False)


def _same_picture(data: bytes, original: Image.Image) -> bool:
    """Whether ``data`` decodes as the same format, size and mode as ``original``; a JPEG is
    decoded at an eighth of its size (every compressed byte is still read)."""
    try:
        with open_photo(io.BytesIO(data)) as image:
            same = (photo_format(image), image.size, image.mode) == (
                photo_format(original), original.size, original.mode)
            if image.format in ("JPEG", "MPO"):
                image.draft(None, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
            return same
    except Exception:  # any decoder error: the stripped bytes are not a photo
        return False


def _reencoded(
    image: Image.Image,
    fmt: str,
    orientation: int,
    changes: tuple[str, ...],
    keep_metadata: bool,
) -> UploadPhoto:
    image.seek(0)
    image.load()
    icc = image.info.get("icc_profile") if image.mode in ("RGB", "RGBA", "L", "P") else None
    pixels = _upright(_eight_bit_rgb(image), orientation)
    target: UploadFormat = "jpeg" if fmt in ("heif", "avif") else fmt  # type: ignore[assignment]
    params: dict[str, object] = {}
    if icc:
        params["icc_profile"] = icc
    exif = _exif_kept(image) if keep_metadata else None
    if exif:
        params["exif"] = exif
    if target in ("jpeg", "webp"):
        params["quality"] = JPEG_QUALITY
    buffer = io.BytesIO()
    pixels.save(buffer, target.upper(), **params)
    removed = () if keep_metadata else (METADATA_REMOVED,)
    return UploadPhoto(buffer.getvalue(), target, changes + removed)


def _exif_kept(image: Image.Image) -> bytes | None:
    """The EXIF block to keep on a re-encoded photo, its orientation reset; None when it
    cannot be read (it says nothing about the pixels, which are sent all the same)."""
    try:
        with pillow_quiet():
            exif = image.getexif()
        if not exif:
            return None
        exif[_ORIENTATION_TAG] = 1
        return exif.tobytes()
    except Exception:
        return None
