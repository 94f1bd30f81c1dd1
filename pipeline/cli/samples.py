"""Sample subject folders for the demo: drawn faces and objects, plus deliberately bad files.

    >>> create_samples(Path("demo/inbox"), count=3)
    ['alice', 'bob', 'teapot', 'mixed_bag', 'too_many']

Everything is drawn with Pillow from a seeded random generator, so the same arguments give
byte-identical folders (and so the same dataset fingerprints). Pictures are 512x512 flat
drawings, a few kilobytes each, saved as a mix of PNG, JPEG and WebP; some carry a
misleading extension (a PNG named ``.jpg``) to show that formats are judged by content.

``mixed_bag`` holds one file for each way a photo can be rejected next to a few good ones, so
it still trains, with warnings; ``too_many`` holds 51 images and is rejected as a whole.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Final

from PIL import Image, ImageDraw

from pipeline.api.contract import MAX_TRAINING_IMAGES
from pipeline.errors import ConfigError

__all__ = ["BAD_SUBJECT", "TOO_MANY_SUBJECT", "create_samples"]

SUBJECT_NAMES: Final = ("alice", "bob", "teapot", "carol", "dave", "vase", "erin", "frank", "mug")
OBJECT_SUBJECTS: Final = frozenset({"teapot", "vase", "mug"})
BAD_SUBJECT: Final = "mixed_bag"
TOO_MANY_SUBJECT: Final = "too_many"
SAMPLE_SIZE: Final = 512
TINY_SIZE: Final = 64

#: (format written, extension used): the second and fifth lie about what they are.
_SAVE_PLAN: Final = (
    ("png", "png"),
    ("png", "jpg"),
    ("jpeg", "jpg"),
    ("webp", "webp"),
    ("webp", "png"),
    ("jpeg", "jpeg"),
)

RGB = tuple[int, int, int]
_SKIN_TONES: Final[tuple[RGB, ...]] = (
    (255, 224, 196),
    (241, 194, 160),
    (224, 172, 125),
    (198, 134, 90),
    (141, 85, 54),
    (92, 59, 40),
)
_HAIR_COLORS: Final[tuple[RGB, ...]] = (
    (30, 25, 20),
    (80, 50, 30),
    (150, 100, 50),
    (220, 190, 120),
    (170, 60, 30),
    (120, 120, 120),
)
Drawing = Callable[[random.Random, random.Random, int], Image.Image]


def _color(rng: random.Random, low: int = 0, high: int = 255) -> RGB:
    return (rng.randint(low, high), rng.randint(low, high), rng.randint(low, high))


def _jitter(rng: random.Random, color: RGB, amount: int = 12) -> RGB:
    r, g, b = (max(0, min(255, c + rng.randint(-amount, amount))) for c in color)
    return (r, g, b)


def _background(rng: random.Random, size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), _color(rng, 60, 230))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(1, 4)):
        x, y = rng.randrange(size), rng.randrange(size)
        radius = rng.randint(size // 16, size // 4)
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=_color(rng, 40, 240))
    return image


def _draw_face(identity: random.Random, rng: random.Random, size: int) -> Image.Image:
    """A cartoon face: the identity (skin, hair, eyes) is fixed, the pose and light vary."""
    skin = _jitter(rng, identity.choice(_SKIN_TONES), 10)
    hair = _jitter(rng, identity.choice(_HAIR_COLORS), 8)
    iris = _color(identity, 20, 160)
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    unit = size / 512 * rng.uniform(0.8, 1.1)
    cx = size / 2 + rng.uniform(-40, 40) * size / 512
    cy = size / 2 + rng.uniform(-30, 30) * size / 512
    rx, ry = 120 * unit, 155 * unit
    draw.ellipse(
        (cx - rx - 14 * unit, cy - ry - 24 * unit, cx + rx + 14 * unit, cy + ry / 3), fill=hair
    )
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=skin)
    look = rng.uniform(-6, 6) * unit
    for side in (-1, 1):
        ex, ey = cx + side * 48 * unit, cy - 30 * unit
        draw.ellipse(
            (ex - 22 * unit, ey - 13 * unit, ex + 22 * unit, ey + 13 * unit), fill=(250, 250, 250)
        )
        draw.ellipse(
            (ex + look - 9 * unit, ey - 9 * unit, ex + look + 9 * unit, ey + 9 * unit), fill=iris
        )
        brow = ey - 28 * unit - rng.uniform(0, 8) * unit
        draw.line((ex - 24 * unit, brow, ex + 24 * unit, brow), fill=hair, width=int(6 * unit))
    draw.line(
        (cx, cy - 5 * unit, cx - 10 * unit, cy + 35 * unit, cx + 6 * unit, cy + 38 * unit),
        fill=_jitter(rng, skin, 40),
        width=int(4 * unit),
    )
    smile = rng.uniform(10, 40) * unit
    draw.arc(
        (cx - 45 * unit, cy + 45 * unit - smile, cx + 45 * unit, cy + 75 * unit + smile),
        start=15,
        end=165,
        fill=(150, 40, 50),
        width=int(6 * unit),
    )
    return image


def _draw_object(identity: random.Random, rng: random.Random, size: int) -> Image.Image:
    """A teapot-like object: the colour and shape are fixed, the place and size vary."""
    body = _jitter(rng, _color(identity, 30, 220), 10)
    trim = _color(identity, 0, 255)
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    unit = size / 512 * rng.uniform(0.75, 1.1)
    cx = size / 2 + rng.uniform(-50, 50) * size / 512
    cy = size / 2 + rng.uniform(-40, 40) * size / 512
    draw.arc(
        (cx + 90 * unit, cy - 60 * unit, cx + 190 * unit, cy + 60 * unit),
        start=270,
        end=90,
        fill=trim,
        width=int(18 * unit),
    )
    draw.polygon(
        [
            (cx - 110 * unit, cy),
            (cx - 200 * unit, cy - 80 * unit),
            (cx - 185 * unit, cy - 90 * unit),
            (cx - 90 * unit, cy + 30 * unit),
        ],
        fill=body,
    )
    draw.ellipse((cx - 130 * unit, cy - 100 * unit, cx + 130 * unit, cy + 110 * unit), fill=body)
    draw.ellipse((cx - 55 * unit, cy - 125 * unit, cx + 55 * unit, cy - 80 * unit), fill=trim)
    draw.ellipse((cx - 14 * unit, cy - 150 * unit, cx + 14 * unit, cy - 118 * unit), fill=trim)
    return image


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "jpeg":
        image.save(buffer, "JPEG", quality=85)
    elif fmt == "webp":
        image.save(buffer, "WEBP", quality=80)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def _subject_names(count: int) -> list[str]:
    names = list(SUBJECT_NAMES[:count])
    names += [f"subject_{index:02d}" for index in range(len(names) + 1, count + 1)]
    return names


def _drawing_for(name: str) -> Drawing:
    return _draw_object if name in OBJECT_SUBJECTS else _draw_face


def _write_subject(folder: Path, name: str, images: int, seed: int) -> list[Path]:
    identity = random.Random(f"{seed}:{name}:identity")
    traits = identity.getstate()
    draw = _drawing_for(name)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(images):
        identity.setstate(traits)
        rng = random.Random(f"{seed}:{name}:{index}")
        fmt, extension = _SAVE_PLAN[index % len(_SAVE_PLAN)]
        path = folder / f"{name}_{index + 1:02d}.{extension}"
        path.write_bytes(_encode(draw(identity, rng, SAMPLE_SIZE), fmt))
        written.append(path)
    return written


def _write_bad_subject(folder: Path, seed: int) -> None:
    good = _write_subject(folder, BAD_SUBJECT, 3, seed)
    rng = random.Random(f"{seed}:{BAD_SUBJECT}:bad")
    identity = random.Random(f"{seed}:{BAD_SUBJECT}:identity")
    face = _draw_face(identity, rng, SAMPLE_SIZE)
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
    (folder / "tiny.png").write_bytes(_encode(_draw_face(identity, rng, TINY_SIZE), "png"))
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


def _write_too_many(folder: Path, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{seed}:{TOO_MANY_SUBJECT}")
    for index in range(MAX_TRAINING_IMAGES + 1):
        image = Image.new("RGB", (SAMPLE_SIZE, SAMPLE_SIZE), _color(rng, 40, 220))
        draw = ImageDraw.Draw(image)
        x, y = (index % 8) * 60 + 20, (index // 8) * 60 + 20
        draw.rectangle((x, y, x + 40, y + 40), fill=_color(rng))
        (folder / f"frame_{index + 1:03d}.png").write_bytes(_encode(image, "png"))


def create_samples(
    inbox: Path,
    *,
    count: int = 3,
    images_per_subject: int = 12,
    seed: int = 0,
    include_bad: bool = True,
) -> list[str]:
    """Create ``count`` good subject folders (and, with ``include_bad``, two bad ones).

    Returns the names of the folders created, good ones first. Refuses (``ConfigError``) to
    write into a subject folder that already exists and is not empty, so it never mixes its
    pictures with real ones.
    """
    names = _subject_names(count)
    extra = [BAD_SUBJECT, TOO_MANY_SUBJECT] if include_bad else []
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
        _write_too_many(inbox / TOO_MANY_SUBJECT, seed)
    return names + extra
