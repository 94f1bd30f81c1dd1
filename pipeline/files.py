"""Writing into the outbox safely: whole files or nothing, and no litter after a crash."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiofiles.threadpool
from aiofiles.threadpool.binary import AsyncBufferedIOBase, AsyncBufferedReader

from .inputs.safe_files import open_inbox_file

#: Suffix of files being written; a crash may leave one, the next run removes it.
PART_SUFFIX = ".part"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file beside ``path``, flush it to disk, then rename over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}")
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


def remove_partials(root: Path) -> int:
    """Delete the temp files an interrupted run left under ``root``; return how many."""
    if not root.is_dir():
        return 0
    removed = 0
    for leftover in root.rglob(f".*{PART_SUFFIX}"):
        if leftover.is_file():
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
