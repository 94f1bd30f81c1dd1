"""Test photographs made from the real photos scikit-image ships in its wheel.

``astronaut`` is a portrait (one face), ``chelsea`` a cat, ``coffee`` a cup and ``camera`` a
man whose face is small and turned away. Each helper returns encoded bytes, as a file in an
inbox would hold them.
"""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from PIL import Image, ImageFilter
from skimage import data


@cache
def _rgb(name: str) -> Image.Image:
    return Image.fromarray(getattr(data, name)()).convert("RGB")


def astronaut() -> Image.Image:
    return _rgb("astronaut").copy()


def chelsea() -> Image.Image:
    return _rgb("chelsea").copy()


def coffee() -> Image.Image:
    return _rgb("coffee").copy()


def camera() -> Image.Image:
    return _rgb("camera").copy()


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    if fmt.upper() in ("HEIF", "HEIC"):
        import pillow_heif

        pillow_heif.register_heif_opener()
        fmt = "HEIF"
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def jpeg(image: Image.Image, quality: int = 92, **params: object) -> bytes:
    return encode(image, "JPEG", quality=quality, **params)


def blurred(image: Image.Image, radius: float = 3) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius))


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    both = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
    both.paste(left, (0, 0))
    both.paste(right, (left.width, 0))
    return both


def sideways_jpeg(image: Image.Image) -> bytes:
    """``image`` stored turned a quarter to the left, with EXIF orientation 6 ("rotate 90
    clockwise to show"), as a phone held upright writes it."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x8825] = {2: (48.0, 51.0, 30.0)}  # a GPS block: the latitude of somewhere
    stored = image.transpose(Image.Transpose.ROTATE_90)
    return jpeg(stored, exif=exif.tobytes())


def animated_webp(image: Image.Image) -> bytes:
    return encode(image, "WEBP", save_all=True, append_images=[image.rotate(8)], duration=100)


def cmyk_jpeg(image: Image.Image) -> bytes:
    return jpeg(image.convert("CMYK"))


def png16(image: Image.Image) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one; OpenCV can)."""
    import cv2

    wide = np.asarray(image).astype(np.uint16) * 257
    ok, encoded = cv2.imencode(".png", wide[:, :, ::-1])
    assert ok
    return bytes(encoded.tobytes())


def palette_png(image: Image.Image) -> bytes:
    return encode(image.convert("P"), "PNG")


def upscaled(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image.resize(size, Image.Resampling.LANCZOS)


def on_background(background: Image.Image, position: tuple[int, int], scale: float) -> Image.Image:
    """The astronaut's portrait, ``scale`` times its size, on ``background`` (900x700)."""
    canvas = background.resize((900, 700))
    side = int(512 * scale)
    canvas.paste(astronaut().resize((side, side)), position)
    return canvas


def distinct_portraits() -> dict[str, Image.Image]:
    """Six photos of the one person, each with one face found, none a near-duplicate of
    another (their perceptual hashes differ by 16 bits or more; measured)."""
    from PIL import ImageOps

    face = astronaut()
    return {
        "plain": face,
        "mirror": ImageOps.mirror(face),
        "kitchen": on_background(coffee(), (200, 100), 1.0),
        "sofa": on_background(chelsea(), (350, 150), 0.9),
        "grey": ImageOps.grayscale(face).convert("RGB").rotate(8),
        "close": face.crop((100, 0, 400, 300)).resize((512, 512)),
    }
