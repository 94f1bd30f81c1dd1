"""Time the photo gate's measuring of each photo under a folder, one thread.

    .venv/bin/python benchmarks/measure_photos.py /tmp/lora-bench/inbox-200x20 [--limit 400]

Reads up to ``--limit`` png/jpeg/webp files found under the folder (a benchmark inbox, for
instance), then times ``measure_photo`` (decode, faces, sharpness, hash, thumbnail) on each
in turn, faces looked for as for a person, and prints the mean per photo.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

from pipeline.inputs.photo_checks import measure_photo

SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--limit", type=int, default=400)
    args = parser.parse_args()
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in SUFFIXES)
    photos = [path.read_bytes() for path in files[: args.limit]]
    start = time.perf_counter()
    for data in photos:
        measure_photo(io.BytesIO(data), find_faces=True)
    each = (time.perf_counter() - start) / max(1, len(photos)) * 1000
    print(f"{len(photos)} photos, {each:.1f} ms a photo")


if __name__ == "__main__":
    main()
