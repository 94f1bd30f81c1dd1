"""Image formats told from content: magic bytes, the size in a header, a full decode.

:func:`detect_format` names what a file is from its first :data:`HEAD_BYTES` bytes, so a
rejection can say "a HEIC/HEIF image" rather than "bad file". :func:`header_size` reads width
and height from a PNG, WebP or JPEG header before any pixel is decoded (a decompression bomb
is refused on its claimed size), and :func:`open_problem` says in the plugin's own words why
a file of its detected format does not open.

    >>> detect_format(b"GIF89a...")
    'gif'
    >>> format_label("heic")
    'a HEIC/HEIF image'

Everything here works on bytes or an open binary file; :mod:`pipeline.inputs.dataset` decides what
is accepted and words the rejections.
"""

from __future__ import annotations

import struct
from typing import IO, Final, Literal

from PIL import ImageFile as PilImageFile
from PIL import JpegImagePlugin, PngImagePlugin, WebPImagePlugin

__all__ = [
    "ACCEPTED_FORMATS",
    "CONVERTED_FORMATS",
    "HEAD_BYTES",
    "JPEG_HEADER_SCAN_BYTES",
    "MAX_JPEG_JUNK_BYTES",
    "MAX_JPEG_SEGMENTS",
    "DamagedHeader",
    "ImageFormat",
    "open_problem",
    "detect_format",
    "format_label",
    "header_size",
]

ImageFormat = Literal["png", "jpeg", "webp"]

#: How much of a file's start :func:`detect_format` and :func:`header_size` need.
HEAD_BYTES: Final = 256
#: How far into a JPEG the size (SOF segment) is looked for; EXIF/ICC blocks come first.
JPEG_HEADER_SCAN_BYTES: Final = 16 << 20
#: Segments a JPEG may have before its first scan. A photo has a few dozen (EXIF, XMP split
#: in 64 KiB parts, an ICC profile in several, tables); every decoder walks them one by
#: one, Pillow keeping an entry for each: four million empty ones took seconds and 300 MB.
MAX_JPEG_SEGMENTS: Final = 1000
#: Junk bytes decoders skip between a JPEG's segments (Pillow one by one, in Python).
MAX_JPEG_JUNK_BYTES: Final = 1 << 20

#: The detected formats the training API takes, by :func:`detect_format`'s name.
ACCEPTED_FORMATS: Final[dict[str, ImageFormat]] = {"png": "png", "jpeg": "jpeg", "webp": "webp"}
#: Phone formats taken by converting them to a jpeg before the upload (``pillow-heif``).
CONVERTED_FORMATS: Final = frozenset({"heic", "avif"})
_PLUGINS: Final[dict[str, type[PilImageFile.ImageFile]]] = {
    "png": PngImagePlugin.PngImageFile,
    "jpeg": JpegImagePlugin.JpegImageFile,
    "webp": WebPImagePlugin.WebPImageFile,
}

_MAGIC: Final = (
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
    (b"\x00\x00\x01\x00", "ico"),
    (b"%PDF-", "pdf"),
    (b"8BPS", "psd"),
    (b"\xff\x0a", "jxl"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "jxl"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jpeg2000"),
    (b"PK\x03\x04", "zip"),
    (b"\x1f\x8b", "gzip"),
    (b"RIFF", "riff"),
)
_BMP_DIB_HEADER_SIZES: Final = frozenset({12, 40, 52, 56, 64, 108, 124})
_HEIF_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
_JPEG_SOF_MARKERS: Final = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_JPEG_STANDALONE_MARKERS: Final = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})

_FORMAT_LABELS: Final = {
    "gif": "a GIF image",
    "bmp": "a BMP image",
    "tiff": "a TIFF image",
    "heic": "a HEIC/HEIF image",
    "avif": "an AVIF image",
    "ico": "an icon file",
    "pdf": "a PDF document",
    "psd": "a Photoshop document",
    "jxl": "a JPEG XL image",
    "jpeg2000": "a JPEG 2000 image",
    "zip": "a zip archive",
    "gzip": "a gzip archive",
    "riff": "a RIFF file (audio or video)",
    "mp4": "an MP4/QuickTime video",
    "svg": "an SVG drawing",
    "text": "a text file",
}

# ----------------------------------------------------------------------------- formats


def detect_format(head: bytes) -> str | None:
    """Name the format of a file from its first bytes (256 are enough), or None.

    Returns ``"png"``, ``"jpeg"`` or ``"webp"`` for the formats the API takes, and names
    others so a rejection can say what the file really is: ``"gif"``, ``"bmp"``, ``"tiff"``,
    ``"heic"``, ``"avif"``, ``"mp4"``, ``"svg"``, ``"text"``, ``"pdf"``...

        >>> detect_format(b"\\x89PNG\\r\\n\\x1a\\n...")
        'png'
        >>> detect_format(b"GIF89a...")
        'gif'
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return _iso_media_format(head)
    if _is_bmp(head):
        return "bmp"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return _sniff_text(head)


def _iso_media_format(head: bytes) -> str:
    box_size = int.from_bytes(head[:4], "big")
    end = min(box_size, len(head)) if box_size >= 16 else len(head)
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, end - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "avif"
    if brands & _HEIF_BRANDS:
        return "heic"
    return "mp4"


def _is_bmp(head: bytes) -> bool:
    if not head.startswith(b"BM") or len(head) < 18:
        return False
    return int.from_bytes(head[14:18], "little") in _BMP_DIB_HEADER_SIZES


def _sniff_text(head: bytes) -> str | None:
    if not head or b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:
            return None
        text = head[: exc.start].decode("utf-8")
    text = text.removeprefix("\ufeff")
    if not all(char.isprintable() or char in "\t\r\n\f\v" for char in text):
        return None
    opening = text.lstrip().lower()
    if opening.startswith("<svg") or (opening.startswith("<?xml") and "<svg" in opening):
        return "svg"
    return "text"


def format_label(detected: str | None) -> str:
    """What :func:`detect_format` found, as words for a rejection: ``"a GIF image"``."""
    if detected is None:
        return "not a recognised image"
    return _FORMAT_LABELS.get(detected, f"a {detected.upper()} file")


# ----------------------------------------------------------------------------- header sizes


class DamagedHeader(ValueError):
    """A header built to cost the decoders time: its message completes "a damaged JPEG
    file (...)"."""


def header_size(fp: IO[bytes], head: bytes, fmt: str) -> tuple[int, int] | None:
    """Width and height read from the header alone, before any pixel is decoded; None when
    the header holds none. Raises :class:`DamagedHeader` for a JPEG of more than
    :data:`MAX_JPEG_SEGMENTS` segments or :data:`MAX_JPEG_JUNK_BYTES` junk bytes before its
    picture."""
    if fmt == "png":
        if head[12:16] != b"IHDR" or len(head) < 24:
            return None
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    if fmt == "webp":
        return _webp_size(head)
    return _jpeg_size(fp)


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return width, height
    return None


def _jpeg_size(fp: IO[bytes]) -> tuple[int, int] | None:
    """The frame's size, from a walk of the segments up to the first scan (where the
    decoders walk too: a flood after the frame costs them as much as one before it)."""
    fp.seek(0)
    data = fp.read(JPEG_HEADER_SCAN_BYTES)
    size: tuple[int, int] | None = None
    pos, segments, junk = 2, 0, 0
    while True:
        mark = data.find(b"\xff", pos)
        if mark < 0 or mark + 1 >= len(data):
            return _header_end(size, len(data))
        junk += mark - pos
        marker = data[mark + 1]
        if marker == 0xFF or marker == 0x00:  # a fill byte; a stray zero, skipped as junk
            pos = mark + 1 if marker == 0xFF else mark + 2
            junk += 0 if marker == 0xFF else 2
            continue
        segments += 1
        _check_header_cost(segments, junk)
        if marker in (0xD9, 0xDA):
            return size
        pos = mark + 2
        if marker in _JPEG_STANDALONE_MARKERS:
            continue
        if pos + 7 > len(data):
            return size
        length, _precision, height, width = struct.unpack(">HBHH", data[pos : pos + 7])
        if marker in _JPEG_SOF_MARKERS and size is None:
            size = int(width), int(height)
        if length < 2:
            return size
        pos += length


def _check_header_cost(segments: int, junk: int) -> None:
    if segments > MAX_JPEG_SEGMENTS:
        raise DamagedHeader(
            f"more than {MAX_JPEG_SEGMENTS:,} segments before its picture, where a photo "
            "has a few dozen"
        )
    if junk > MAX_JPEG_JUNK_BYTES:
        raise DamagedHeader(f"{junk:,} bytes of junk between its segments")


def _header_end(size: tuple[int, int] | None, read: int) -> tuple[int, int] | None:
    """The size found when the walk ran out of bytes before the first scan: a short file
    is for the decoder to judge; one whose header fills the whole scan is refused."""
    if read == JPEG_HEADER_SCAN_BYTES:
        raise DamagedHeader(
            f"more than {JPEG_HEADER_SCAN_BYTES >> 20} MiB of segments before its picture, "
            "where a photo has a few hundred KiB"
        )
    return size


# ----------------------------------------------------------------------------- decoding


def open_problem(fp: IO[bytes], fmt: str) -> str:
    """Why ``fp`` does not open as ``fmt`` (png, jpeg or webp), in the plugin's own words:
    what Pillow's generic "cannot identify image file" hides."""
    fp.seek(0)
    plugin = _PLUGINS.get(fmt)
    if plugin is None:
        return "its header cannot be read"
    try:
        plugin(fp).close()
    # A damaged header can make a plugin raise almost anything (SyntaxError, OSError,
    # struct.error, ValueError...): its message is the reason.
    except Exception as exc:
        return str(exc) or type(exc).__name__
    return "its header cannot be read"
