"""Where a subject's results go, under names the pipeline makes.

    outbox/<job>/<subject>/                 version 1
    outbox/<job>/<subject>/v<N>/            version N > 1 (no folder name can produce it:
                                            a subject is one path component)
        <subject>[@vN].safetensors          the trained LoRA, and its .json sidecar
        <slug>/<subject>[@vN]-<slug>-<i>.<ext>   pictures, each with its .json sidecar

``@`` never appears in a stem made from a name, so ``alice@v2`` cannot be a folder's.

No string from the service ever becomes part of a path: file names are built from the
subject's name (made safe), the prompt's slug (ours) and a number, with an extension from a
fixed table. Every write goes through :meth:`SubjectOutbox.path`, which refuses a name that
could climb out and creates each folder itself, refusing one that is a link or a file: a
destination can never resolve outside ``outbox/<job>/<subject>``.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import structlog

from ..errors import UnsafePath
from ..files import remove_partials
from ..store.protocol import SubjectRow

log = structlog.get_logger(__name__)

#: Extensions of the pictures the service may send, by its ``image_type``.
PICTURE_EXTENSIONS = {"png": "png", "jpeg": "jpg", "jpg": "jpg", "webp": "webp"}
MAX_STEM_CHARS = 60
MAX_SIDECAR_BYTES = 1 << 20
_UNSAFE_CHARS = re.compile(r"[^\w.-]+")


def safe_stem(name: str) -> str:
    """``name`` as a file-name stem: letters, digits, ``_ . -`` only, never hidden.

    >>> safe_stem("Alice Smith (2024)")
    'Alice-Smith-2024'
    """
    stem = _UNSAFE_CHARS.sub("-", name.encode("utf-8", "replace").decode("utf-8"))
    return stem.strip(".-_")[:MAX_STEM_CHARS].strip(".-_") or "subject"


def picture_extension(image_type: str, requested: str) -> str:
    """The extension for a picture: from the fixed table, else the type we asked for."""
    return PICTURE_EXTENSIONS.get(image_type.strip().lower(), PICTURE_EXTENSIONS[requested])


def _check_component(part: str) -> None:
    if part in ("", ".", "..") or "/" in part or "\0" in part or os.sep in part:
        raise UnsafePath(f"{part!r} is not a file or folder name the outbox accepts")


class SubjectOutbox:
    """The folder of one subject version under ``outbox/<job>``."""

    def __init__(self, job_root: Path, subject: str, version: int) -> None:
        _check_component(subject)
        self.job_root = job_root
        self.parts = (subject,) if version == 1 else (subject, f"v{version}")
        self.folder = job_root.joinpath(*self.parts)
        self.stem = safe_stem(subject) + ("" if version == 1 else f"@v{version}")

    def path(self, *parts: str) -> Path:
        """``folder/<parts...>``, its folders created one by one from ``outbox/<job>`` down,
        each checked to be a real folder (not a link, not a file), so the file's place stays
        inside the subject's. The outbox itself is the operator's: it may be a link."""
        for part in parts:
            _check_component(part)
        folders = [self.job_root]
        for part in (*self.parts, *parts[:-1]):
            folders.append(folders[-1] / part)
        self.job_root.parent.mkdir(parents=True, exist_ok=True)
        for folder in folders:
            try:
                os.mkdir(folder)
            except FileExistsError:
                pass
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise UnsafePath(
                    f"{folder} is a link or a file where the pipeline keeps a folder of "
                    "results: nothing was written there; move it away"
                )
        return folders[-1] / parts[-1]

    def lora_name(self) -> str:
        return f"{self.stem}.safetensors"

    def picture_name(self, slug: str, number: int, extension: str) -> str:
        return f"{self.stem}-{slug}-{number}.{extension}"


def sidecar_of(path: Path) -> Path:
    return path.with_suffix(".json")


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """A sidecar we wrote, or None when it is missing, not a plain file, or not ours."""
    try:
        fd = os.open(sidecar_of(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        raw = handle.read(MAX_SIDECAR_BYTES + 1)
    try:
        data = json.loads(raw) if len(raw) <= MAX_SIDECAR_BYTES else None
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def already_saved(path: Path, key: str, value: object) -> bool:
    """True when ``path`` is a plain file whose sidecar says ``key == value``: the same
    result is already there. Anything else is downloaded (again) and replaced."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    sidecar = read_sidecar(path)
    return sidecar is not None and value is not None and sidecar.get(key) == value


def clean_partials(job_root: Path, *, older_than: float | None = None) -> None:
    """Remove the temp files killed runs left under ``outbox/<job>`` (with ``older_than``,
    only those untouched that long: with several workers the others may be writing)."""
    if job_root.is_symlink():  # cleaning through it would delete elsewhere
        log.warning(
            "outbox.not_cleaned", folder=str(job_root),
            hint="it is a link, not the pipeline's folder: nothing is cleaned or "
                 "written through it; move it away",
        )
    elif removed := remove_partials(job_root, older_than=older_than):
        log.info("outbox.cleaned", partial_files=removed)


def clean_subject_partials(job_root: Path, subject: SubjectRow) -> None:
    """Remove the temp files in the folder of a subject a worker just leased: only its
    lease holder writes there, so any left are a dead worker's. Nothing is cleaned through
    a link."""
    try:
        folder = SubjectOutbox(job_root, subject.name, subject.version).folder
    except UnsafePath:
        return  # a name no folder is made for: nothing was written under it
    parts = folder.relative_to(job_root).parts
    places = [job_root.joinpath(*parts[:n]) for n in range(len(parts) + 1)]
    if folder.is_dir() and not any(place.is_symlink() for place in places):
        if removed := remove_partials(folder):
            log.info("outbox.cleaned", subject=subject.name, partial_files=removed,
                     reason="left by the worker that had the subject")
