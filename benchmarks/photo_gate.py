"""How long the photo gate takes on one subject of 50 twelve-megapixel JPEGs.

    .venv/bin/python benchmarks/photo_gate.py [--photos 50] [--workdir /tmp/lora-photo-bench]

Makes the photos once (scikit-image's astronaut on its coffee photo, 4000x3000, with sensor-like
noise so that they compress like camera files, 3-5 MB each), then times, best of three:
``analyse_photo`` on every photo in turn and on a pool of as many threads as CPUs, the whole
``validate_subject`` of the folder as intake runs it for a person (read, hash, header checks,
decode and measure each photo, judge, near-duplicates), and the same again with every
photo's measures already in the cache (what a folder touched but not changed costs).
"""

from __future__ import annotations

import argparse
import io
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from pipeline.inputs.dataset import validate_subject
from pipeline.inputs.photo_cache import PhotoCache
from pipeline.inputs.photo_checks import PhotoSettings, analyse_photo

SIZE = (4000, 3000)


def make_photos(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"IMG_{index:04d}.jpg" for index in range(count)]
    if all(path.exists() for path in paths):
        return paths
    rng = np.random.default_rng(7)
    background = Image.fromarray(data.coffee()).resize(SIZE, Image.Resampling.BICUBIC)
    portrait = Image.fromarray(data.astronaut()).resize((2600, 2600), Image.Resampling.LANCZOS)
    for index, path in enumerate(paths):
        canvas = background.copy()
        canvas.paste(portrait.rotate(index * 7 % 40 - 20), (700 + index * 5, 400))
        noisy = np.asarray(canvas).astype(np.int16) + rng.normal(0, 5, (SIZE[1], SIZE[0], 3))
        picture = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=92)
        path.write_bytes(buffer.getvalue())
    return paths


def analyse(path: Path) -> None:
    with path.open("rb") as fp:
        analyse_photo(fp, path.name, PhotoSettings(), faces_required=True)


def best_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=50)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lora-photo-bench"))
    args = parser.parse_args()
    paths = make_photos(args.workdir / "inbox" / "subject", args.photos)
    megabytes = sum(path.stat().st_size for path in paths) / 1e6
    print(f"{len(paths)} photos of {SIZE[0]}x{SIZE[1]}, {megabytes:.0f} MB, "
          f"{os.cpu_count()} CPUs")
    serial = best_of(3, lambda: [analyse(path) for path in paths])
    each = serial / len(paths) * 1000
    print(f"analyse_photo, one at a time: {serial:.2f} s ({each:.0f} ms a photo)")
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:
        pooled = best_of(3, lambda: list(pool.map(analyse, paths)))
    print(f"analyse_photo, {workers} threads: {pooled:.2f} s")
    folder = paths[0].parent

    def gate(cache: PhotoCache | None = None) -> object:
        return validate_subject(folder, root=folder.parent, class_word="person", cache=cache)

    whole = best_of(3, gate)
    report = validate_subject(folder, root=folder.parent, class_word="person")
    print(f"validate_subject of the folder: {whole:.2f} s "
          f"({len(report.accepted)} accepted, {len(report.rejected_files)} refused)")
    cache_file = args.workdir / "photo-checks.db"
    cache_file.unlink(missing_ok=True)
    with PhotoCache.open(cache_file) as cache:
        gate(cache)
        warm = best_of(3, lambda: gate(cache))
    print(f"validate_subject, every photo's measures cached: {warm:.2f} s")

if __name__ == "__main__":
    main()
