"""Pictures for tests that are not about the photo gate: sharp, distinct, cheap.

Each seed gives a grid of random flat blocks with hard edges: sharp (the Laplacian's
variance is in the hundreds), a perceptual hash of its own (two seeds are far from being
near-duplicates), mid brightness, no face, a few kilobytes as PNG. Tests of faces use the
real photographs of ``tests/inputs/photos.py``.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

GRID = 16


def picture(seed: int, size: tuple[int, int] = (512, 512), *, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    cells = rng.integers(40, 216, (GRID, GRID, 3), dtype=np.uint8)
    image = Image.fromarray(cells, "RGB").resize(size, Image.Resampling.NEAREST)
    return image if mode == "RGB" else image.convert(mode)


def picture_bytes(
    fmt: str = "PNG", size: tuple[int, int] = (512, 512), seed: int = 0, **save: object
) -> bytes:
    """:func:`picture` encoded as ``fmt`` (``alpha=True`` gives an RGBA picture)."""
    mode = "RGBA" if save.pop("alpha", False) else "RGB"
    buffer = io.BytesIO()
    picture(seed, size, mode=mode).save(buffer, fmt, **save)
    return buffer.getvalue()
