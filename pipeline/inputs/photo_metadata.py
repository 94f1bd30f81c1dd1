"""Taking a photo's metadata out without touching its picture: JPEG segments, PNG and WebP
chunks dropped as they are, the compressed pixels copied byte for byte.

Each stripper keeps what the picture needs to be decoded and shown in its colours, and drops
everything else, known or not: a list of what may leak (EXIF, XMP, GPS, IPTC...) would miss
the next vendor's block. What is kept:

- JPEG: the tables, frame and scans, the JFIF header (without its thumbnail), an ICC
  profile (APP2 ``ICC_PROFILE``) and Adobe's colour transform (APP14); every other APPn
  segment (EXIF, XMP, IPTC, MPF and its extra pictures, vendor blocks) and comment is
  dropped, between scans too, with the junk bytes decoders skip, and nothing is kept past
  the end of the picture (a motion photo's video, a phone's trailer).
- PNG: the critical chunks and the colour and animation chunks, up to IEND.
- WebP: the image, alpha, animation and ICC chunks, inside the RIFF's size.

A file a stripper cannot walk (a length past the end, no end of picture, thousands of
segments) gives ``None``: the caller re-encodes the picture instead, which keeps no
metadata at all.

    >>> strip_metadata(jpeg_bytes, "jpeg") == jpeg_bytes   # nothing to take out
    True
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Final

__all__ = ["strip_metadata"]

_SOS: Final = 0xDA
_EOI: Final = 0xD9
_COM: Final = 0xFE
#: Markers without a length: RSTn, TEM (SOI handled apart).
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})
#: The APPn segments a decoder needs, by marker and signature.
_KEPT_APPS: Final = {
    0xE0: (b"JFIF\x00",),
    0xE2: (b"ICC_PROFILE\x00",),
    0xEE: (b"Adobe",),
}
#: Segments walked in all (tables, scans, and those between scans); past it the file is
#: not walked on (a flood of empty segments would cost seconds in Python) but re-encoded.
MAX_JPEG_SEGMENTS: Final = 4096
#: JFIF's header up to its thumbnail's size (identifier, version, units, density).
_JFIF_HEADER: Final = 12
#: The next marker after entropy-coded data: 0xFF followed by anything but a stuffed zero,
#: a restart marker or another 0xFF (a fill byte).
_NEXT_MARKER: Final = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _kept_jpeg_segment(marker: int, segment: bytes) -> bytes | None:
    """``segment`` (marker and length included) as it is sent, or None to drop it."""
    if marker == _COM:
        return None
    if not 0xE0 <= marker <= 0xEF:
        return segment
    body = segment[4:]
    if not any(body.startswith(sign) for sign in _KEPT_APPS.get(marker, ())):
        return None
    if marker == 0xE0 and len(body) > _JFIF_HEADER + 2:  # a JFIF thumbnail: drop it
        body = body[:_JFIF_HEADER] + b"\x00\x00"
        return b"\xff\xe0" + struct.pack(">H", len(body) + 2) + body
    return segment


def _strip_jpeg(data: bytes) -> bytes | None:
    if not data.startswith(b"\xff\xd8"):
        return None
    out = bytearray(b"\xff\xd8")
    pos, size, segments = 2, len(data), 0
    while segments <= MAX_JPEG_SEGMENTS:
        mark = data.find(b"\xff", pos)  # junk bytes before a marker are dropped
        if mark < 0 or mark + 1 >= size:
            return None  # no end of picture
        marker = data[mark + 1]
        if marker == 0xFF or marker == 0x00:  # a fill byte; a stuffed zero out of place
            pos = mark + 1 if marker == 0xFF else mark + 2
            continue
        if marker == _EOI:
            return bytes(out + b"\xff\xd9")  # anything after the picture is dropped
        segments += 1
        if marker in _STANDALONE:
            out += data[mark : mark + 2]
            pos = mark + 2
            continue
        if mark + 4 > size:
            return None
        (length,) = struct.unpack(">H", data[mark + 2 : mark + 4])
        end = mark + 2 + length
        if length < 2 or end > size:
            return None
        kept = _kept_jpeg_segment(marker, data[mark:end])
        if kept is not None:
            out += kept
        pos = end
        if marker == _SOS:
            found = _NEXT_MARKER.search(data, pos)
            scan_end = size if found is None else found.start()
            out += data[pos:scan_end]  # the compressed pixels, byte for byte
            pos = scan_end
    return None


#: PNG chunks a decoder needs for the pixels, their colours and an animation.
_PNG_KEPT: Final = frozenset({
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT",
    b"bKGD", b"pHYs", b"cICP", b"mDCV", b"cLLI", b"acTL", b"fcTL", b"fdAT",
})


def _strip_png(data: bytes) -> bytes | None:
    out = bytearray(data[:8])
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return None
        if kind in _PNG_KEPT:
            out += data[pos:end]
        if kind == b"IEND":
            return bytes(out)  # anything after it is dropped
        pos = end
    return None


#: WebP chunks a decoder needs: the image (lossy, lossless, alpha), animation and colours.
_WEBP_KEPT: Final = frozenset({b"VP8X", b"VP8 ", b"VP8L", b"ALPH", b"ANIM", b"ANMF", b"ICCP"})
_VP8X_EXIF: Final = 0x08
_VP8X_XMP: Final = 0x04


def _strip_webp(data: bytes) -> bytes | None:
    if len(data) < 12:
        return None
    (riff_size,) = struct.unpack("<I", data[4:8])
    limit = min(len(data), 8 + riff_size)  # bytes past the RIFF's end are dropped
    chunks = bytearray()
    pos = 12
    while pos + 8 <= limit:
        kind = data[pos : pos + 4]
        (length,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        end = pos + 8 + length
        if end > limit:
            return None
        if kind in _WEBP_KEPT:
            chunk = bytearray(data[pos:end])
            if kind == b"VP8X" and length > 0:
                chunk[8] &= ~(_VP8X_EXIF | _VP8X_XMP) & 0xFF
            chunks += chunk + b"\x00" * (length & 1)  # padding, even when the file lacks it
        pos = end + (length & 1)
    return b"RIFF" + struct.pack("<I", len(chunks) + 4) + b"WEBP" + bytes(chunks)


_STRIPPERS: Final[dict[str, Callable[[bytes], bytes | None]]] = {
    "jpeg": _strip_jpeg,
    "png": _strip_png,
    "webp": _strip_webp,
}


def strip_metadata(data: bytes, fmt: str) -> bytes | None:
    """``data`` (a ``fmt`` of png, jpeg or webp) without its metadata, its picture's bytes
    untouched; ``data`` itself when there is nothing to take out; None when the file cannot
    be walked (re-encode it instead)."""
    stripped = _STRIPPERS[fmt](data)
    return data if stripped == data else stripped
