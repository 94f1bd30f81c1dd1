"""Subject folders for tests that are not about the photo gate, from :mod:`tests.pictures`.

Every picture gets a seed of its own across the whole inbox, so no two photos are alike
(the asset cache would send a shared one once). The job of :func:`tests.conftest.write_job`
looks for no faces in them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Final

from pipeline.api.contract import MAX_TRAINING_IMAGES
from tests.pictures import picture, picture_bytes

NAMES: Final = ("alice", "bob", "teapot", "carol", "dave", "vase", "erin", "frank", "mug")
BAD_SUBJECT: Final = "mixed_bag"
TOO_MANY_SUBJECT: Final = "too_many"
#: Seeds of one subject: ``SEEDS_PER_SUBJECT * index + n``.
SEEDS_PER_SUBJECT: Final = 1000


def write_photos(folder: Path, count: int, *, first_seed: int = 0, stem: str = "") -> list[Path]:
    """``count`` distinct PNG pictures in ``folder`` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = stem or folder.name
    written = []
    for n in range(count):
        path = folder / f"{stem}_{n + 1:02d}.png"
        path.write_bytes(picture_bytes("PNG", seed=first_seed + n))
        written.append(path)
    return written


def write_subjects(inbox: Path, count: int, images: int, *, first: int = 0) -> list[str]:
    """``count`` subjects (alice, bob, teapot...) of ``images`` pictures each; ``first``
    skips that many names (and their seeds)."""
    names = [*NAMES, *(f"subject_{n:02d}" for n in range(len(NAMES) + 1, 100))]
    chosen = names[first:first + count]
    for index, name in enumerate(chosen, start=first):
        write_photos(inbox / name, images, first_seed=SEEDS_PER_SUBJECT * (index + 1))
    return chosen


def write_bad_subjects(inbox: Path) -> list[str]:
    """``mixed_bag``: three good pictures beside an empty file and a GIF named ``.jpg``
    (it still trains, with those refused); ``too_many``: one picture over the limit of a
    training, all of them good."""
    bag = inbox / BAD_SUBJECT
    write_photos(bag, 3, first_seed=SEEDS_PER_SUBJECT * 200)
    (bag / "empty.jpg").write_bytes(b"")
    gif = io.BytesIO()
    picture(SEEDS_PER_SUBJECT * 200 + 99).convert("P").save(gif, "GIF")
    (bag / "animation.jpg").write_bytes(gif.getvalue())
    write_photos(inbox / TOO_MANY_SUBJECT, MAX_TRAINING_IMAGES + 1,
                 first_seed=SEEDS_PER_SUBJECT * 300, stem="frame")
    return [BAD_SUBJECT, TOO_MANY_SUBJECT]
