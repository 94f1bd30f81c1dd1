"""The bytes the service gets for a photo: converted when needed, metadata stripped, else as is."""

from __future__ import annotations

import io

from PIL import Image

from pipeline.inputs.photo_formats import upload_bytes
from tests.inputs import photos


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_a_photo_that_needs_no_change_keeps_its_exact_bytes() -> None:
    for data in (photos.jpeg(photos.astronaut()), photos.encode(photos.coffee(), "PNG"),
                 photos.encode(photos.chelsea(), "WEBP")):
        sent = upload_bytes(data)
        assert sent.data is data and sent.changes == ()


def test_a_sideways_jpeg_is_sent_upright_without_its_gps() -> None:
    data = photos.sideways_jpeg(photos.astronaut().crop((64, 0, 448, 512)))
    sent = upload_bytes(data)
    assert sent.format == "jpeg"
    assert sent.changes == ("rotated upright (EXIF orientation 6)", "metadata removed")
    image = decoded(sent.data)
    assert image.size == (384, 512)
    assert not image.getexif()


def test_keep_metadata_keeps_the_exif_with_the_orientation_reset() -> None:
    sent = upload_bytes(photos.sideways_jpeg(photos.astronaut()), keep_metadata=True)
    exif = decoded(sent.data).getexif()
    assert exif[0x0112] == 1
    assert 0x8825 in exif
    assert "metadata removed" not in sent.changes


def test_metadata_alone_is_stripped_without_re_encoding_the_picture() -> None:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    data = photos.jpeg(photos.astronaut(), exif=exif.tobytes(), comment=b"at home")
    sent = upload_bytes(data)
    assert sent.changes == ("metadata removed",)
    assert len(sent.data) < len(data)
    assert b"PhoneMaker" not in sent.data and b"at home" not in sent.data
    scan = data.index(b"\xff\xda")
    assert sent.data.endswith(data[scan:])  # the compressed picture, byte for byte
    assert upload_bytes(data, keep_metadata=True).data is data


def test_png_and_webp_metadata_chunks_are_dropped() -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Location", "48.85N 2.35E")
    png = photos.encode(photos.coffee(), "PNG", pnginfo=info)
    sent = upload_bytes(png)
    assert b"48.85N" not in sent.data and sent.changes == ("metadata removed",)
    assert decoded(sent.data).tobytes() == decoded(png).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    webp = photos.encode(photos.coffee(), "WEBP", exif=exif.tobytes())
    sent = upload_bytes(webp)
    assert b"PhoneMaker" not in sent.data
    assert decoded(sent.data).size == (600, 400)


def test_heic_cmyk_16_bit_palette_and_animated_become_plain_8_bit_rgb() -> None:
    cases = {
        "heic": (photos.encode(photos.astronaut(), "HEIF", quality=90), "jpeg"),
        "cmyk": (photos.cmyk_jpeg(photos.astronaut()), "jpeg"),
        "png16": (photos.png16(photos.astronaut()), "png"),
        "palette": (photos.palette_png(photos.astronaut()), "png"),
        "animated": (photos.animated_webp(photos.astronaut()), "webp"),
    }
    for label, (data, fmt) in cases.items():
        sent = upload_bytes(data)
        image = decoded(sent.data)
        assert (sent.format, image.format.lower(), image.mode) == (fmt, fmt, "RGB"), label
        assert getattr(image, "n_frames", 1) == 1, label
        assert sent.changes and sent.data != data, label
    png16 = decoded(upload_bytes(cases["png16"][0]).data)
    assert png16.getpixel((256, 256)) == photos.astronaut().getpixel((256, 256))
