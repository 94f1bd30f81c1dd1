"""Pillow work: checking uploads, keeping thumbnails, drawing the "generated" pictures.

A generated picture is drawn when it is downloaded (nothing is cached): a background colour
derived from the seed, the prompt wrapped in a panel, the checkpoint and LoRAs used, and a
strip of thumbnails of the LoRAs' training images (plus the init image for img2img), so a
person looking at the output can tell which subject and which prompt produced it. An img2img
picture is drawn over its init image instead of the colour: the init image resized to fill
the picture, tinted by the seed's colour in proportion to ``strength`` (how much img2img may
change it), so it visibly derives from the picture it started from.
Everything here is synchronous and CPU-bound: callers run it in a worker thread.
"""

from __future__ import annotations

import colorsys
import io
import random
import textwrap
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

THUMBNAIL_SIDE = 64
#: An init image is kept at most this size (the longer side) to draw img2img pictures over.
BACKDROP_SIDE = 512
#: How much of the seed's colour covers an init image at strength 1.
MAX_TINT = 0.4
MAX_INIT_PIXELS = 4096 * 4096  # "16 MP"
MAX_UPLOAD_PIXELS = 8192 * 8192

_PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
_SAVE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


class ImageRejected(Exception):
    """An image the service would refuse: ``reason`` is the contract's UPPER_SNAKE reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ImageInfo:
    """What is kept of a received image."""

    extension: str  # png | jpeg | webp
    width: int
    height: int
    thumbnail: bytes  # JPEG, at most THUMBNAIL_SIDE px on its longer side
    backdrop: bytes | None = None  # JPEG, at most BACKDROP_SIDE px (init images only)


def inspect_image(
    data: bytes, max_pixels: int = MAX_UPLOAD_PIXELS, *, backdrop: bool = False
) -> ImageInfo:
    """Decode ``data`` fully and return its format, size and a thumbnail (and, with
    ``backdrop``, a copy of at most :data:`BACKDROP_SIDE` px to draw over).

    Raises :class:`ImageRejected` for anything that is not a whole png/jpeg/webp picture or
    that holds more than ``max_pixels`` pixels.
    """
    side = BACKDROP_SIDE if backdrop else THUMBNAIL_SIDE
    try:
        with Image.open(io.BytesIO(data)) as image:
            extension = _PIL_FORMATS.get(image.format or "")
            if extension is None:
                raise ImageRejected(
                    "INVALID_IMAGE_FORMAT", f"unsupported image format {image.format!r}"
                )
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRejected(
                    "IMAGE_EXCEEDS_MAX_RESOLUTION",
                    f"image is {width}x{height}; at most {max_pixels} pixels",
                )
            image.draft("RGB", (side * 2, side * 2))
            image.load()
            thumb = image.convert("RGB")
    except ImageRejected:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as exc:
        raise ImageRejected("INVALID_IMAGE_FORMAT", f"not a decodable image: {exc}") from exc
    kept = None
    if backdrop:
        thumb.thumbnail((BACKDROP_SIDE, BACKDROP_SIDE))
        kept = _jpeg(thumb)
    thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return ImageInfo(extension, width, height, _jpeg(thumb), kept)


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


@dataclass
class LoraPicture:
    """A LoRA as drawn in a picture: its name, strength and training thumbnails."""

    name: str
    strength: float
    thumbnails: list[bytes] = field(default_factory=list)


@dataclass
class RenderRequest:
    """Everything drawn in one generated picture."""

    width: int
    height: int
    image_type: str
    task_type: str
    prompt: str
    negative_prompt: str | None
    model_name: str
    seed: int
    index: int
    count: int
    loras: list[LoraPicture] = field(default_factory=list)
    init_thumbnail: bytes | None = None
    #: img2img: the init image to draw over (see :func:`inspect_image`), and its strength.
    init_backdrop: bytes | None = None
    strength: float = 0.5


def _font(size: int) -> Font:
    return ImageFont.load_default(size=size)


def _seed_colour(seed: int) -> tuple[int, int, int]:
    hue = (seed * 0.6180339887) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.45, 0.85)
    return int(red * 255), int(green * 255), int(blue * 255)


def _background(request: RenderRequest) -> Image.Image:
    colour = _seed_colour(request.seed + request.index)
    if request.init_backdrop is not None:
        return _over_init_image(request, colour)
    image = Image.new("RGB", (request.width, request.height), colour)
    draw = ImageDraw.Draw(image)
    rng = random.Random(request.seed * 31 + request.index)
    side = min(request.width, request.height)
    for _ in range(6):
        radius = rng.randint(side // 10, side // 3)
        x, y = rng.randint(0, request.width), rng.randint(0, request.height)
        shade = rng.choice((0.75, 0.9, 1.1, 1.25))
        tone = tuple(min(255, int(c * shade)) for c in colour)
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=tone)
    return image


def _over_init_image(request: RenderRequest, colour: tuple[int, int, int]) -> Image.Image:
    """The init image filling the picture (cropped to its shape), tinted by the seed's
    colour as much as ``strength`` lets img2img stray from it."""
    assert request.init_backdrop is not None
    size = (request.width, request.height)
    with Image.open(io.BytesIO(request.init_backdrop)) as init:
        fitted = ImageOps.fit(init.convert("RGB"), size, Image.Resampling.BILINEAR)
    tint = Image.new("RGB", size, colour)
    return Image.blend(fitted, tint, MAX_TINT * max(0.0, min(1.0, request.strength)))


def _paste_thumb(canvas: Image.Image, data: bytes, box: tuple[int, int], side: int) -> None:
    with Image.open(io.BytesIO(data)) as thumb:
        tile = ImageOps.contain(thumb.convert("RGB"), (side, side))
    canvas.paste(tile, box)


def _portrait(canvas: Image.Image, request: RenderRequest, top: int) -> None:
    """The subject, large: the first training thumbnail (or the init image) upscaled."""
    source = next((lora.thumbnails[0] for lora in request.loras if lora.thumbnails), None)
    source = source or request.init_thumbnail
    strip = max(16, min(96, request.width // 7, request.height // 5)) + 8
    side = min(request.width * 2 // 5, request.height - strip - top - 8)
    if source is None or side < 32:
        return
    with Image.open(io.BytesIO(source)) as thumb:
        tile = ImageOps.contain(thumb.convert("RGB"), (side, side))
    room = request.height - strip - top
    canvas.paste(tile, ((request.width - tile.width) // 2, top + (room - tile.height) // 2))


def _thumbnail_strip(canvas: Image.Image, request: RenderRequest, font: Font) -> None:
    thumbs = [t for lora in request.loras for t in lora.thumbnails]
    tiles: list[tuple[str, bytes]] = [("", t) for t in thumbs]
    if request.init_thumbnail is not None:
        tiles.insert(0, ("init", request.init_thumbnail))
    if not tiles:
        return
    side = max(16, min(96, request.width // 7, request.height // 5))
    gap = max(2, side // 12)
    fit = max(1, (request.width - gap) // (side + gap))
    top = request.height - side - gap
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, top - gap, request.width, request.height), fill=(20, 20, 20))
    for slot, (label, data) in enumerate(tiles[:fit]):
        left = gap + slot * (side + gap)
        _paste_thumb(canvas, data, (left, top), side)
        if label:
            draw.text((left + 2, top + 2), label, fill=(255, 255, 0), font=font)


def _caption_lines(request: RenderRequest) -> list[str]:
    lines = [
        f"EMULATED {request.task_type}  image {request.index + 1}/{request.count}",
        f"seed {request.seed}  model {request.model_name}",
    ]
    lines += [f"LoRA {lora.name} @ {lora.strength:g}" for lora in request.loras]
    if request.init_backdrop is not None:
        lines.append(f"over the init image, strength {request.strength:g}")
    return lines


def render_generation(request: RenderRequest) -> bytes:
    """The encoded picture (``request.image_type``) of ``request.width x request.height``."""
    canvas = _background(request)
    size = max(9, min(request.width, request.height) // 28)
    font, small = _font(size), _font(max(8, size * 3 // 4))
    draw = ImageDraw.Draw(canvas)
    margin = max(4, size // 2)
    y = margin
    for line in _caption_lines(request):
        draw.text((margin, y), line, fill=(0, 0, 0), font=small)
        y += int(size * 0.95)
    columns = max(8, int((request.width - 2 * margin) / (size * 0.55)))
    text = request.prompt
    if request.negative_prompt:
        text += f"\n(negative: {request.negative_prompt})"
    wrapped = "\n".join(textwrap.fill(part, columns) for part in text.splitlines())
    box = draw.multiline_textbbox((margin, y + margin), wrapped, font=font)
    draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(255, 255, 255))
    draw.multiline_text((margin, y + margin), wrapped, fill=(0, 0, 0), font=font)
    _portrait(canvas, request, int(box[3]) + 6)
    _thumbnail_strip(canvas, request, small)
    return encode(canvas, request.image_type)


def render_cover(thumbnails: list[bytes], side: int = 256) -> bytes:
    """A PNG grid of training thumbnails (the model's cover picture)."""
    canvas = Image.new("RGB", (side, side), (40, 40, 40))
    cells = 1
    while cells * cells < len(thumbnails):
        cells += 1
    tile = side // cells
    for slot, data in enumerate(thumbnails[: cells * cells]):
        _paste_thumb(canvas, data, ((slot % cells) * tile, (slot // cells) * tile), tile)
    return encode(canvas, "png")


def encode(image: Image.Image, image_type: str) -> bytes:
    """``image`` as png, jpeg or webp bytes (fast settings)."""
    out = io.BytesIO()
    kind = _SAVE_FORMATS[image_type]
    if kind == "PNG":
        image.save(out, format=kind, compress_level=1)
    elif kind == "WEBP":
        image.save(out, format=kind, quality=80, method=0)
    else:
        image.save(out, format=kind, quality=85)
    return out.getvalue()
