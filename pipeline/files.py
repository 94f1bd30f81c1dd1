"""Writing into the outbox safely: whole files or nothing, and no litter after a crash."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiofiles.threadpool
from aiofiles.threadpool.binary import AsyncBufferedIOBase, AsyncBufferedReader

from .inputs.safe_files import open_inbox_file

#: Suffix of files being written; a crash may leave one, the next run removes it.
PART_SUFFIX = ".part"


def part_path(path: Path) -> Path:
    """A fresh temp name beside ``path``: hidden and ending in :data:`PART_SUFFIX`, so that
    :func:`remove_partials` finds what a crash left, and unique, so that two writers of the
    same file never share one."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}")


def write_atomic(path: Path, content: bytes | Iterable[bytes]) -> None:
    """Write ``content`` (bytes, or chunks of them) to ``path`` whole or not at all.

    It goes to a temp file beside ``path`` (see :func:`part_path`), is flushed to disk, then
    renamed over ``path``: a reader sees the old file or the new one, never half of it, and a
    crash leaves at most a temp file. Chunks are written as they come, so a large file (the
    report's HTML) need not be held in memory.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = part_path(path)
    try:
        with open(temp, "wb") as handle:
            for chunk in (content,) if isinstance(content, bytes) else content:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted UTF-8 JSON, atomically (:func:`write_atomic`)."""
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_atomic(path, text.encode("utf-8"))


def remove_partials(root: Path, *, older_than: float | None = None) -> int:
    """Delete the temp files an interrupted run left under ``root``; return how many. With
    ``older_than``, only those not written to for that many seconds (another process may be
    writing the others)."""
    if not root.is_dir():
        return 0
    removed = 0
    horizon = None if older_than is None else time.time() - older_than
    for leftover in root.rglob(f".*{PART_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):  # renamed or removed meanwhile
            if leftover.is_file() and (horizon is None or leftover.stat().st_mtime < horizon):
                leftover.unlink()
                removed += 1
    return removed


@asynccontextmanager
async def open_reader(path: Path) -> AsyncIterator[AsyncBufferedReader]:
    """A regular file for async reading, opened at once in the caller's thread, without
    following a link or blocking on a FIFO (see :func:`pipeline.inputs.safe_files.open_inbox_file`).

    ``aiofiles.open`` opens in a worker thread, and a task cancelled during that await
    leaks the file it never received; a local open is quick enough to do here instead.
    """
    with open_inbox_file(path) as raw:
        yield aiofiles.threadpool.wrap(raw)


@asynccontextmanager
async def open_writer(path: Path) -> AsyncIterator[AsyncBufferedIOBase]:
    """A file for async writing; see :func:`open_reader`."""
    with open(path, "wb") as raw:
        yield aiofiles.threadpool.wrap(raw)
