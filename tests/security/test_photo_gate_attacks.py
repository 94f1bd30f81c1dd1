"""A hostile inbox against the photo gate: files built to cost time or memory while they are
read, measured or stripped, and races on the folder while it is read. Each is refused (or
taken) within a bound, with a sentence naming it.
"""

from __future__ import annotations

import struct
import time

import pytest
from PIL import Image

from pipeline.inputs.photo_checks import PhotoSettings
from pipeline.inputs.photo_files import Content, Gate, Rejection, _read_content
from pipeline.inputs.photo_formats import upload_bytes
from pipeline.inputs.photo_metadata import strip_metadata
from tests.inputs import photos

GATE = Gate(PhotoSettings(), faces=False, cache=None, max_pixels=40_000_000)


def segment(marker: int, body: bytes = b"") -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def timed(data: bytes) -> tuple[Content | Rejection, float]:
    start = time.perf_counter()
    result = _read_content(data, "crowded.jpg", GATE)
    return result, time.perf_counter() - start


def jpeg_with(before_frame: bytes = b"", before_scan: bytes = b"") -> bytes:
    jpeg = photos.jpeg(photos.astronaut())
    frame = jpeg.index(b"\xff\xc0")
    scan = jpeg.index(b"\xff\xda")
    return jpeg[:2] + before_frame + jpeg[2:frame] + jpeg[frame:scan] + before_scan + jpeg[scan:]


# --- JPEG: millions of segments, megabytes of junk ------------------------------------------


@pytest.mark.parametrize("where", ["before the frame", "between frame and scan"])
def test_a_jpeg_of_millions_of_empty_segments_is_refused_at_once(where: str) -> None:
    """4 million empty comments (16 MB): the header walk, Pillow's own walk (which keeps a
    list entry per segment) and the stripper each took seconds, 8.7 s at the gate and 5.8 s
    more at the upload, 300 MB of memory. A photo has a few dozen segments."""
    flood = segment(0xFE) * ((16 << 20) // 4 - 1000)
    data = jpeg_with(**{"before_frame" if where == "before the frame" else "before_scan": flood})
    result, seconds = timed(data)
    assert isinstance(result, Rejection), result
    assert "segments before its picture" in result.reason, result.reason
    assert result.reason.startswith("crowded.jpg is a damaged JPEG file")
    assert seconds < 0.5, f"{seconds:.2f} s"


def test_a_jpeg_with_megabytes_of_junk_between_segments_is_refused_at_once() -> None:
    """Decoders skip junk bytes between segments one by one (Pillow in Python)."""
    jpeg = photos.jpeg(photos.astronaut())
    app0_end = 4 + int.from_bytes(jpeg[4:6], "big")
    data = jpeg[:app0_end] + b"\x00" * (8 << 20) + jpeg[app0_end:]
    result, seconds = timed(data)
    assert isinstance(result, Rejection), result
    assert "junk" in result.reason, result.reason
    assert seconds < 0.5, f"{seconds:.2f} s"


def test_segments_between_scans_cost_the_stripper_no_more_than_a_bound() -> None:
    """libjpeg reads segments between scans in C; the stripper walks them in Python: past
    a bound it gives up and the picture is encoded again."""
    progressive = photos.jpeg(photos.astronaut(), progressive=True)
    table = progressive.index(b"\xff\xc4", progressive.index(b"\xff\xda"))
    data = progressive[:table] + segment(0xFE) * (1 << 20) + progressive[table:]
    start = time.perf_counter()
    assert strip_metadata(data, "jpeg") is None
    assert time.perf_counter() - start < 0.5
    sent = upload_bytes(data)
    assert sent.changes == ("metadata removed",) and len(sent.data) < len(data) // 10


def test_a_photo_s_few_dozen_segments_are_fine() -> None:
    icc = b"\x00" * 600
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    data = jpeg_with(before_frame=segment(0xE1, exif.tobytes()) * 40,
                     before_scan=segment(0xE2, b"ICC_PROFILE\x00\x01\x01" + icc) * 10)
    result, _ = timed(data)
    assert isinstance(result, Content), result



def test_exif_blocks_after_the_frame_cost_no_more_than_the_header_bound() -> None:
    """Pillow joins EXIF segments by concatenation, in quadratic time: 700 of 64 KiB after
    the frame header, where the size walk used to stop looking, took seconds."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    block = segment(0xE1, exif.tobytes().ljust(65000, b"\x00"))
    data = jpeg_with(before_scan=block * 700)
    result, seconds = timed(data)
    assert isinstance(result, Rejection), result
    assert "MiB of segments before its picture" in result.reason, result.reason
    assert seconds < 0.5, f"{seconds:.2f} s"
