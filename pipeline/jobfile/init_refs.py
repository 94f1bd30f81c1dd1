"""Where the init images of img2img prompts are, and reading them for a job or a subject.

A prompt's ``init_image`` is written relative to the file that names it: the job file's
folder for the job's prompts, the subject's folder for a ``subject.toml``'s. The loader
makes each path absolute as soon as it reads the file (:func:`job_paths_resolved`,
:func:`subject_paths_resolved`), remembering who named it (:class:`InitRef`), so a
merged subject's prompts can be read by the rules of their origin
(:mod:`pipeline.inputs.init_images`): the operator's file, or inbox input. A refusal is
a :class:`~pipeline.errors.ConfigError` naming the file that names the picture, the field
as that file has it, and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..inputs.init_images import (
    InitImage,
    InitImageRefused,
    read_job_image,
    read_subject_image,
)

__all__ = [
    "InitRef",
    "job_paths_resolved",
    "read_init_images",
    "subject_paths_resolved",
]


@dataclass(frozen=True)
class InitRef:
    """One init image as a file names it: ``field`` is where (``generation.prompts[1]``),
    ``given`` what it says, ``path`` where that leads; ``folder`` is the subject's folder
    when a ``subject.toml`` names it (inbox input), else None (the job file's)."""

    source: str
    field: str
    given: str
    path: str
    folder: Path | None = None


def _absolute(base: Path, given: str) -> str:
    """``given`` from ``base``; lexical (``..`` taken as written), links not resolved."""
    return os.path.abspath(base / Path(given).expanduser())


def _shown(given: str, base: Path) -> str:
    """``given`` as its file would have it: a path already made absolute is shown from
    ``base`` again when it lies below it."""
    if not os.path.isabs(given):
        return given
    relative = os.path.relpath(given, base)
    return given if relative.startswith("..") else relative


def _with_paths(
    entries: Iterable[Any], label: str, base: Path, source: str, folder: Path | None,
    refs: list[InitRef],
) -> list[Any]:
    """``entries`` (texts, or tables as dicts) with each ``init_image`` made absolute from
    ``base``; each is noted in ``refs``."""
    resolved: list[Any] = []
    for index, entry in enumerate(entries):
        given = entry.get("init_image") if isinstance(entry, dict) else None
        if isinstance(given, str) and given.strip() and "\0" not in given:
            path = _absolute(base, given)
            refs.append(InitRef(source, f"{label}[{index}]", _shown(given, base), path, folder))
            entry = {**entry, "init_image": path}
        resolved.append(entry)
    return resolved


def job_paths_resolved(
    generation: Mapping[str, Any], base: Path, source: str
) -> tuple[dict[str, Any], list[InitRef]]:
    """A job file's ``[generation]`` (as dumped) with its init images made absolute from
    ``base`` (the job file's folder), and where each is named."""
    refs: list[InitRef] = []
    updated = dict(generation)
    for key in ("prompts", "extra_prompts"):
        if key in updated:
            updated[key] = _with_paths(updated[key], f"generation.{key}", base, source, None,
                                       refs)
    return updated, refs


def subject_paths_resolved(
    lists: Sequence[tuple[str, Sequence[Any]]], folder: Path, source: str
) -> tuple[list[list[Any]], list[InitRef]]:
    """A ``subject.toml``'s prompt lists (each with the field it comes from) with their
    init images made absolute from the subject's ``folder``."""
    refs: list[InitRef] = []
    resolved = [_with_paths(entries, label, folder, source, folder, refs)
                for label, entries in lists]
    return resolved, refs


def _read(ref: InitRef, inbox: Path) -> InitImage:
    if ref.folder is None:
        return read_job_image(Path(ref.path), inbox=inbox)
    return read_subject_image(Path(ref.path), folder=ref.folder, inbox=inbox)


def read_init_images(
    paths: Iterable[str], refs: Iterable[InitRef], *, inbox: Path, fallback: str
) -> dict[str, InitImage]:
    """Every init image of ``paths`` (absolute, as the merged prompts name them), read and
    judged once each by the rules of whoever named it in ``refs``; a path no ref names is
    the job's own (``fallback`` names the job file). Raises ConfigError with a line for
    every refused picture."""
    named = {ref.path: ref for ref in refs}
    images: dict[str, InitImage] = {}
    problems: list[str] = []
    for path in _unique(paths):
        ref = named.get(path) or InitRef(fallback, "generation", path, path)
        try:
            images[path] = _read(ref, inbox)
        except InitImageRefused as exc:
            problems.append(f"{ref.source}: {ref.field}.init_image = {ref.given!r}: {exc}")
    if problems:
        raise ConfigError("\n".join(problems))
    return images


def _unique(paths: Iterable[str]) -> Iterator[str]:
    seen: set[str] = set()
    for path in paths:
        if path not in seen:
            seen.add(path)
            yield path
