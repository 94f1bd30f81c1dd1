"""The demo's pictures: cartoon portraits and teapot-like objects, drawn with Pillow.

Each drawing takes two seeded generators: ``identity`` fixes what stays the same in every
photo of one subject (a person's skin, hair and eyes; an object's colours), ``rng`` chooses
the rest (framing, pose, expression, clothes, background). Drawings are flat, so their edges
are sharp, and faces are drawn the way OpenCV's frontal-face cascade (the photo gate's
detector, :mod:`pipeline.inputs.faces`) expects one: eyes darker than the cheeks, a lighter
nose between them, hair darker than the skin.

    >>> draw_face(random.Random("alice"), random.Random("alice:1"), 512).size
    (512, 512)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageDraw

__all__ = ["Drawing", "Look", "background", "draw_face", "draw_object", "draw_person"]

RGB = tuple[int, int, int]
Drawing = Callable[[random.Random, random.Random, int], Image.Image]

# The cascade misses dark faces more often than light ones: the darkest tone here is the
# darkest it finds reliably in these drawings (a darker one was missed in about 1 of 20).
_SKIN_TONES: Final[tuple[RGB, ...]] = (
    (255, 224, 196),
    (241, 194, 160),
    (224, 172, 125),
    (198, 134, 90),
    (141, 85, 54),
    (100, 63, 42),
)
_HAIR_COLORS: Final[tuple[RGB, ...]] = (
    (30, 25, 20),
    (80, 50, 30),
    (150, 100, 50),
    (220, 190, 120),
    (170, 60, 30),
    (120, 120, 120),
)
#: Hair is at least this much darker (luma, 0-255) than the skin: with lighter hair around
#: a dark face the cascade found no face in most drawings.
_HAIR_CONTRAST: Final = 30


def _color(rng: random.Random, low: int = 0, high: int = 255) -> RGB:
    return (rng.randint(low, high), rng.randint(low, high), rng.randint(low, high))


def _jitter(rng: random.Random, color: RGB, amount: int = 12) -> RGB:
    r, g, b = (max(0, min(255, c + rng.randint(-amount, amount))) for c in color)
    return (r, g, b)


def _shade(color: RGB, factor: float) -> RGB:
    r, g, b = (max(0, min(255, round(c * factor))) for c in color)
    return (r, g, b)


def _lift(color: RGB, amount: int) -> RGB:
    r, g, b = (min(255, c + amount) for c in color)
    return (r, g, b)


def _mix(color: RGB, other: RGB, share: float) -> RGB:
    """``color`` with ``share`` of ``other`` mixed in."""
    r, g, b = (round(c + (o - c) * share) for c, o in zip(color, other, strict=True))
    return (r, g, b)


def _luma(color: RGB) -> float:
    return 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]


def background(rng: random.Random, size: int) -> Image.Image:
    """A room, a landscape, a studio light or a curtain, in random colours and places."""
    base = _color(rng, 60, 230)
    image = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(image)
    kind = rng.randrange(4)
    if kind == 0:
        corner = rng.randrange(size)
        draw.rectangle((corner, 0, size, size), fill=_shade(base, rng.uniform(0.6, 0.9)))
        floor = rng.randint(size * 5 // 8, size * 7 // 8)
        draw.rectangle((0, floor, size, size), fill=_color(rng, 40, 200))
        for _ in range(rng.randint(1, 2)):
            w, h = rng.randint(size // 6, size // 3), rng.randint(size // 6, size // 3)
            x, y = rng.randrange(size - w), rng.randrange(max(1, floor - h))
            draw.rectangle((x, y, x + w, y + h), fill=_color(rng, 30, 240),
                           outline=_color(rng, 0, 120), width=size // 80)
    elif kind == 1:
        horizon = rng.randint(size // 2, size * 3 // 4)
        sky = _color(rng, 120, 240)
        for band in range(4):
            draw.rectangle((0, horizon * band // 4, size, horizon * (band + 1) // 4),
                           fill=_shade(sky, 1 - 0.08 * band))
        draw.rectangle((0, horizon, size, size), fill=_color(rng, 40, 160))
        for _ in range(rng.randint(2, 5)):
            x, r = rng.randrange(size), rng.randint(size // 12, size // 5)
            draw.ellipse((x - r, horizon - 2 * r, x + r, horizon), fill=_color(rng, 20, 140))
    elif kind == 2:
        x, y = rng.randrange(size), rng.randrange(size)
        for step in range(5, 0, -1):
            r = size * step // 4
            draw.ellipse((x - r, y - r, x + r, y + r), fill=_shade(base, 1.25 - 0.1 * step))
    else:
        stripe = _color(rng, 40, 230)
        width = rng.randint(size // 16, size // 5)
        for x in range(rng.randrange(width), size, 2 * width):
            draw.rectangle((x, 0, x + width, size), fill=stripe)
    return image


@dataclass(frozen=True, slots=True)
class Look:
    """What stays the same in every photo of one person."""

    skin: RGB
    hair: RGB
    iris: RGB
    long_hair: bool
    fringe: bool
    width: float

    @classmethod
    def of(cls, identity: random.Random) -> Look:
        skin = identity.choice(_SKIN_TONES)
        darker = [c for c in _HAIR_COLORS if _luma(c) < _luma(skin) - _HAIR_CONTRAST]
        return cls(
            skin=skin,
            hair=identity.choice(darker),
            iris=_color(identity, 20, 110),
            long_hair=identity.random() < 0.4,
            fringe=identity.random() < 0.6,
            width=identity.uniform(0.9, 1.08),
        )


def draw_person(
    draw: ImageDraw.ImageDraw, look: Look, rng: random.Random, cx: float, cy: float,
    unit: float, *, facing: bool = True,
) -> None:
    """Head and shoulders, the face centred on (``cx``, ``cy``), ``unit`` pixels to the unit
    of a 512 px portrait; light, clothes and expression vary. Not ``facing``: from behind."""
    skin = _jitter(rng, look.skin, 8)
    hair = _jitter(rng, look.hair, 8)
    rx, ry = 112 * unit * look.width, 148 * unit
    draw.ellipse((cx - 230 * unit, cy + ry * 0.95, cx + 230 * unit, cy + ry * 0.95 + 360 * unit),
                 fill=_color(rng, 20, 235))
    draw.rectangle((cx - 42 * unit, cy + ry * 0.6, cx + 42 * unit, cy + ry + 30 * unit),
                   fill=_shade(skin, 0.85))
    if look.long_hair:
        draw.rectangle((cx - rx - 22 * unit, cy - ry * 0.2, cx + rx + 22 * unit, cy + ry * 1.05),
                       fill=_shade(hair, 0.9))
    draw.ellipse((cx - rx - 16 * unit, cy - ry - 26 * unit, cx + rx + 16 * unit, cy + ry * 0.4),
                 fill=hair)
    if not facing:
        draw.ellipse((cx - rx - 4 * unit, cy - ry - 20 * unit, cx + rx + 4 * unit, cy + ry),
                     fill=hair)
        for strand in range(-3, 4):
            draw.line((cx + strand * rx / 8, cy - ry - 12 * unit, cx + strand * rx / 3.5,
                       cy + ry * 0.9), fill=_shade(hair, 0.6), width=max(2, int(5 * unit)))
        return
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=skin)
    if look.fringe:
        draw.chord((cx - rx, cy - ry - 10 * unit, cx + rx, cy - ry * 0.25), 180, 360, fill=hair)
    light = _lift(skin, 20)  # cheeks and forehead catch the light; the eyes sit in shade
    for side in (-1, 1):
        x = cx + side * 55 * unit
        draw.ellipse((x - 30 * unit, cy + 20 * unit, x + 30 * unit, cy + 55 * unit), fill=light)
    draw.ellipse((cx - 50 * unit, cy - ry * 0.75, cx + 50 * unit, cy - ry * 0.45), fill=light)
    sclera = _mix((235, 235, 230), skin, 2 / 3)
    look_aside = rng.uniform(-5, 5) * unit
    brow_lift = rng.uniform(0, 10) * unit
    for side in (-1, 1):
        ex, ey = cx + side * 46 * unit, cy - 22 * unit
        ix = ex + look_aside
        draw.ellipse((ex - 30 * unit, ey - 22 * unit, ex + 30 * unit, ey + 18 * unit),
                     fill=_shade(skin, 0.78))
        draw.ellipse((ex - 21 * unit, ey - 11 * unit, ex + 21 * unit, ey + 11 * unit), fill=sclera)
        draw.ellipse((ix - 11 * unit, ey - 11 * unit, ix + 11 * unit, ey + 11 * unit),
                     fill=look.iris)
        draw.ellipse((ix - 5 * unit, ey - 5 * unit, ix + 5 * unit, ey + 5 * unit),
                     fill=(10, 10, 10))
        draw.arc((ex - 22 * unit, ey - 13 * unit, ex + 22 * unit, ey + 13 * unit), 190, 350,
                 fill=(25, 20, 20), width=max(1, int(4 * unit)))
        brow = ey - 26 * unit - brow_lift
        draw.line((ex - 26 * unit, brow + 4 * unit, ex, brow, ex + 26 * unit, brow + 3 * unit),
                  fill=_shade(hair, 0.55), width=max(2, int(9 * unit)))
    draw.polygon([(cx, cy - 20 * unit), (cx - 14 * unit, cy + 38 * unit),
                  (cx + 14 * unit, cy + 38 * unit)], fill=_shade(skin, 1.08))
    draw.ellipse((cx - 16 * unit, cy + 34 * unit, cx + 16 * unit, cy + 46 * unit),
                 fill=_shade(skin, 0.7))
    smile = rng.uniform(0, 30) * unit
    if rng.random() < 0.4:
        draw.chord((cx - 40 * unit, cy + 58 * unit - smile / 2, cx + 40 * unit,
                    cy + 92 * unit + smile / 2), 0, 180, fill=(90, 20, 30))
    else:
        draw.arc((cx - 42 * unit, cy + 50 * unit - smile, cx + 42 * unit, cy + 80 * unit + smile),
                 15, 165, fill=(150, 45, 55), width=max(2, int(7 * unit)))


def draw_face(
    identity: random.Random, rng: random.Random, size: int, *, facing: bool = True
) -> Image.Image:
    """A portrait of the person ``identity`` gives, framed, posed and lit as ``rng`` says,
    mirrored one time in two; not ``facing``: the back of their head."""
    look = Look.of(identity)
    image = background(rng, size)
    scale = size / 512
    unit = scale * rng.uniform(0.62, 1.08)
    cx = size / 2 + rng.uniform(-80, 80) * scale
    cy = size / 2 + rng.uniform(-55, 30) * scale
    draw_person(ImageDraw.Draw(image), look, rng, cx, cy, unit, facing=facing)
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


def draw_object(identity: random.Random, rng: random.Random, size: int) -> Image.Image:
    """A teapot-like object on a table: colours and shape fixed, place, side and size vary.
    Outlined, so that it is sharp all over (the gate judges an object's whole picture)."""
    body = _jitter(rng, _color(identity, 30, 220), 10)
    trim = _color(identity, 0, 255)
    ink = _shade(body, 0.4)
    image = background(rng, size)
    draw = ImageDraw.Draw(image)
    unit = size / 512 * rng.uniform(0.7, 1.05)
    cx = size / 2 + rng.uniform(-60, 60) * size / 512
    cy = size / 2 + rng.uniform(-45, 45) * size / 512
    side = rng.choice((-1, 1))  # where the handle is; the spout is opposite
    line = max(2, int(5 * unit))
    table = cy + 105 * unit
    draw.rectangle((0, table, size, size), fill=_color(rng, 40, 220))
    draw.line((0, table, size, table), fill=_shade(body, 0.3), width=line)
    draw.ellipse((cx - 150 * unit, cy + 90 * unit, cx + 150 * unit, cy + 135 * unit),
                 fill=_shade(body, 0.3))
    handle = cx + side * 140 * unit
    start, end = (270, 90) if side > 0 else (90, 270)
    draw.arc((handle - 50 * unit, cy - 60 * unit, handle + 50 * unit, cy + 60 * unit),
             start=start, end=end, fill=trim, width=int(18 * unit))
    draw.polygon(
        [
            (cx - side * 110 * unit, cy),
            (cx - side * 200 * unit, cy - 80 * unit),
            (cx - side * 185 * unit, cy - 90 * unit),
            (cx - side * 90 * unit, cy + 30 * unit),
        ],
        fill=body, outline=ink, width=line,
    )
    draw.ellipse((cx - 130 * unit, cy - 100 * unit, cx + 130 * unit, cy + 110 * unit), fill=body,
                 outline=ink, width=line)
    for stripe in (-30, 10, 50):
        draw.arc((cx - 128 * unit, cy - 100 * unit + stripe * unit, cx + 128 * unit,
                  cy + 60 * unit + stripe * unit), 20, 160, fill=trim, width=line)
    draw.ellipse((cx - 55 * unit, cy - 125 * unit, cx + 55 * unit, cy - 80 * unit), fill=trim,
                 outline=ink, width=line)
    draw.ellipse((cx - 14 * unit, cy - 150 * unit, cx + 14 * unit, cy - 118 * unit), fill=trim,
                 outline=ink, width=line)
    return image
