"""Metadata a hostile or merely unusual photo hides where a naive stripper does not look.

Each photo here decodes (the gate takes it); what the service gets must hold no location,
whether it sits in an IPTC block, a vendor segment, after the first scan, past the end of
the picture, in a private PNG chunk or an unknown WebP chunk, and must still decode to the
same picture.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from pipeline.inputs.dataset import validate_subject
from pipeline.inputs.photo_checks import measure_photo, upload_changes
from pipeline.inputs.photo_formats import upload_bytes
from tests.inputs import photos

SECRET = b"48.8566N 2.3522E"


def segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def gps_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = SECRET.decode()  # the maker tag, to find it in the bytes
    exif[0x8825] = {2: (48.0, 51.0, 30.0)}
    return exif.tobytes()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def webp_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) & 1)


def webp_chunks(data: bytes) -> list[bytes]:
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        (length,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        end = pos + 8 + length + (length & 1)
        chunks.append(data[pos:end])
        pos = end
    return chunks


def riff(chunks: list[bytes]) -> bytes:
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.format or "", image.size, image.convert("RGB").tobytes()


def plain_jpeg() -> bytes:
    return photos.jpeg(photos.astronaut())


def after_app0(data: bytes, inserted: bytes) -> bytes:
    end = 4 + int.from_bytes(data[4:6], "big")
    return data[:end] + inserted + data[end:]


def hidden_jpegs() -> dict[str, bytes]:
    jpeg = plain_jpeg()
    progressive = photos.jpeg(photos.astronaut(), progressive=True)
    second_table = progressive.index(b"\xff\xc4", progressive.index(b"\xff\xda"))
    iptc = (b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x16"
            b"\x1c\x02\x5a\x00\x05Paris\x1c\x02\x65\x00\x06France" + SECRET)
    return {
        # IPTC (city, country) in Photoshop's APP13 block
        "app13 iptc": after_app0(jpeg, segment(0xED, iptc)),
        # a vendor segment (APP12 "Ducky", APP3 ...) with any text
        "app12 vendor": after_app0(jpeg, segment(0xEC, b"Ducky\x00" + SECRET)),
        # junk bytes between segments (Pillow and libjpeg skip them) before an EXIF block
        "junk then exif": after_app0(jpeg, b"\x00\x00" + segment(0xE1, b"Exif\x00\x00"
                                                                  + gps_exif())),
        # an EXIF block between two scans of a progressive JPEG
        "exif after a scan": progressive[:second_table]
        + segment(0xE1, b"Exif\x00\x00" + gps_exif()) + progressive[second_table:],
        # data past the end of the picture (a motion photo's video, a vendor trailer)
        "trailer": jpeg + b"\x00\x00\x00\x18ftypmp42" + SECRET,
        # junk bytes between segments that spell the place
        "junk text": after_app0(jpeg, SECRET),
    }


@pytest.mark.parametrize("case", sorted(hidden_jpegs()))
def test_jpeg_metadata_is_removed_wherever_it_hides(case: str) -> None:
    data = hidden_jpegs()[case]
    assert pixels(data)[1] == (512, 512)  # Pillow takes it: the gate would accept it
    measures = measure_photo(io.BytesIO(data), find_faces=False)
    assert upload_changes(measures, keep_metadata=False) == ("metadata removed",), case
    sent = upload_bytes(data)
    assert sent.changes == ("metadata removed",), case
    assert SECRET not in sent.data and b"Exif" not in sent.data, case
    assert pixels(sent.data) == pixels(data), case
    assert sent.data.endswith(b"\xff\xd9"), case


def test_a_plain_jpeg_keeps_its_bytes_and_its_colour_segments() -> None:
    jpeg = photos.jpeg(photos.astronaut(), icc_profile=b"\x00" * 600)
    cmyk = photos.cmyk_jpeg(photos.astronaut())  # an Adobe APP14 segment says how to read it
    assert upload_bytes(jpeg).data is jpeg
    stripped = upload_bytes(after_app0(jpeg, segment(0xED, b"Photoshop 3.0\x00" + SECRET)))
    assert stripped.data == jpeg
    sent = upload_bytes(cmyk)
    assert sent.changes == ("CMYK colours to RGB", "metadata removed")


def test_a_multi_picture_jpeg_is_taken_as_its_first_picture_alone() -> None:
    """Phones write MPO JPEGs (a second picture after the first: a depth or HDR gain map,
    each with its own EXIF and GPS). Pillow opens them as "MPO": still a JPEG photo."""
    buffer = io.BytesIO()
    astronaut = photos.astronaut()
    astronaut.save(buffer, "MPO", save_all=True, append_images=[astronaut.rotate(3)],
                   exif=gps_exif(), quality=90)
    data = buffer.getvalue()
    measures = measure_photo(io.BytesIO(data), find_faces=False)
    assert (measures.format, measures.frames, measures.conversions) == ("jpeg", 1, ())
    assert upload_changes(measures, keep_metadata=False) == ("metadata removed",)
    sent = upload_bytes(data)
    assert (sent.format, sent.changes) == ("jpeg", ("metadata removed",))
    assert SECRET not in sent.data and sent.data.count(b"\xff\xd8") == 1
    assert b"MPF\x00" not in sent.data
    with Image.open(io.BytesIO(sent.data)) as image:
        assert (image.format, getattr(image, "n_frames", 1)) == ("JPEG", 1)
    assert pixels(sent.data)[2] == pixels(data)[2]


def hidden_pngs() -> dict[str, bytes]:
    png = photos.encode(photos.coffee(), "PNG")
    iend = png.rindex(b"IEND") - 4
    xmp = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00<x:xmpmeta exif:GPSLatitude='" + SECRET
    return {
        "private chunk": png[:iend] + png_chunk(b"gpSx", SECRET) + png[iend:],
        "xmp in itxt": png[:iend] + png_chunk(b"iTXt", xmp) + png[iend:],
        "after iend": png + png_chunk(b"tEXt", b"GPS\x00" + SECRET),
        "unknown critical-looking chunk": png[:iend] + png_chunk(b"GPSX", SECRET) + png[iend:],
    }


@pytest.mark.parametrize("case", sorted(hidden_pngs()))
def test_png_metadata_is_removed_wherever_it_hides(case: str) -> None:
    data = hidden_pngs()[case]
    sent = upload_bytes(data)
    assert sent.changes == ("metadata removed",), case
    assert SECRET not in sent.data, case
    assert pixels(sent.data) == pixels(data), case


def hidden_webps() -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    with_exif = photos.encode(photos.coffee(), "WEBP", quality=90, exif=exif.tobytes())
    chunks = webp_chunks(with_exif)
    simple = photos.encode(photos.coffee(), "WEBP", quality=90)
    return {
        "unknown chunk": riff([*chunks, webp_chunk(b"LOCA", SECRET)]),
        "after the riff": simple + webp_chunk(b"EXIF", b"MM\x00*" + SECRET),
        "odd exif": riff([chunk if not chunk.startswith(b"EXIF") else
                          webp_chunk(b"EXIF", b"MM\x00*" + SECRET + b"!") for chunk in chunks]),
    }


@pytest.mark.parametrize("case", sorted(hidden_webps()))
def test_webp_metadata_is_removed_wherever_it_hides(case: str) -> None:
    data = hidden_webps()[case]
    sent = upload_bytes(data)
    assert sent.changes == ("metadata removed",), case
    assert SECRET not in sent.data, case
    assert pixels(sent.data)[:2] == pixels(data)[:2], case
    (riff_size,) = struct.unpack("<I", sent.data[4:8])
    assert riff_size + 8 == len(sent.data), case


def test_bytes_past_the_riff_never_make_the_upload_undecodable() -> None:
    """libwebp decodes up to the RIFF's size; a stripper that walked on past it copied a
    chunk-looking tail, cut short, and sent the service a file that no longer decodes."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    data = photos.encode(photos.coffee(), "WEBP", exif=exif.tobytes())
    data += b"JUNK" + struct.pack("<I", 5000) + SECRET
    assert pixels(data)[1] == (600, 400)
    sent = upload_bytes(data)
    assert sent.changes == ("metadata removed",) and SECRET not in sent.data
    assert pixels(sent.data)[:2] == pixels(data)[:2]


def test_a_photo_the_stripper_cannot_walk_is_encoded_again_without_metadata() -> None:
    """Its last chunk is damaged (Pillow stops after the pixels and does not mind): the
    picture is encoded again rather than sent with its text chunk."""
    png = photos.encode(photos.coffee(), "PNG")
    first_data = png.index(b"IDAT") - 4
    data = png[:first_data] + png_chunk(b"tEXt", b"GPS\x00" + SECRET) + png[first_data:-12]
    data += b"\x00\x00\x00\x00-\x92\x00\x00" + b"\xff" * 6
    assert pixels(data)[1] == (600, 400)
    sent = upload_bytes(data)
    assert (sent.format, sent.changes) == ("png", ("metadata removed",))
    assert SECRET not in sent.data
    assert pixels(sent.data) == pixels(data)


def test_the_gate_takes_a_phone_s_multi_picture_jpeg_as_a_photo(tmp_path: Path) -> None:
    """It used to be refused as "a damaged JPEG file (... decodes as a mpo ...)"."""
    folder = tmp_path / "inbox" / "cup"
    folder.mkdir(parents=True)
    buffer = io.BytesIO()
    coffee = photos.coffee()
    coffee.save(buffer, "MPO", save_all=True, append_images=[coffee.rotate(3)], quality=90)
    (folder / "IMG_0001.jpg").write_bytes(buffer.getvalue())
    report = validate_subject(folder, class_word="cup")
    assert report.rejected_files == ()
    (image,) = report.accepted
    assert (image.format, image.changes) == ("jpeg", ("metadata removed",))


def test_a_jfif_thumbnail_is_dropped_and_its_header_kept() -> None:
    """JFIF may carry a thumbnail of the picture as it was (before a crop, say)."""
    jpeg = plain_jpeg()
    app0_end = 4 + int.from_bytes(jpeg[4:6], "big")
    header = jpeg[6:18]  # "JFIF\0", version, units, density
    with_thumbnail = segment(0xE0, header + b"\x02\x02" + b"\x10\x20\x30" * 4)
    data = jpeg[:2] + with_thumbnail + jpeg[app0_end:]
    sent = upload_bytes(data)
    assert sent.changes == ("metadata removed",)
    assert sent.data == jpeg[:2] + segment(0xE0, header + b"\x00\x00") + jpeg[app0_end:]
    assert pixels(sent.data) == pixels(data)
