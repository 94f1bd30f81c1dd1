"""A job whose prompts mix txt2img and img2img, and a picture to start from that anyone
can recognise in a result: blue on the left, yellow on the right."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageStat

BLUE, YELLOW = (0, 0, 255), (255, 255, 0)
INIT_FILE = "refs/halves.png"


def halves(size: tuple[int, int] = (320, 320)) -> bytes:
    image = Image.new("RGB", size, BLUE)
    image.paste(YELLOW, (size[0] // 2, 0, size[0], size[1]))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


HALVES = halves()


def write_img2img_job(folder: Path, *, strength: float = 0.6, image_num: int = 1,
                      extra: str = "", extra_prompts: str = "") -> Path:
    """A job file (inbox and outbox beside it) with a txt2img prompt and an img2img one
    from ``refs/halves.png``."""
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / INIT_FILE).write_bytes(HALVES)
    (folder / "inbox").mkdir(exist_ok=True)
    job = folder / "test.toml"
    job.write_text(f"""
[job]
name = "test"
settle_seconds = 0
{extra}

[generation]
image_num = {image_num}
prompts = [
  "{{instance_prompt}}, take 1",
  {{ prompt = "{{instance_prompt}} as an oil painting", init_image = "{INIT_FILE}", strength = {strength} }},
]
extra_prompts = [{extra_prompts}]

[photos]
faces = "off"
""", encoding="utf-8")
    return job


def mean_colour(picture: Image.Image, box: tuple[int, int, int, int]) -> tuple[float, ...]:
    """The mean colour of ``box`` of ``picture``."""
    return tuple(ImageStat.Stat(picture.convert("RGB").crop(box)).mean)


def distance(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return float(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) ** 0.5)
