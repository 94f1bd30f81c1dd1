"""The per-job lock: two overlapping cron runs of one job never work side by side.

The lock file sits in the job's state folder (:func:`pipeline.store.location.state_dir`),
beside the store it guards: two runs that share a store always share its lock, whatever
folder each was started from.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import LockHeld


@contextmanager
def job_lock(state_dir: Path, job: str) -> Iterator[Path]:
    """Hold ``<state_dir>/<job>.lock`` for the block, or raise :class:`LockHeld` at once.
    ``state_dir`` is the job's state folder, from :func:`~pipeline.store.location.state_dir`."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / f"{job}.lock"
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise LockHeld(
            f"another run of job {job!r} is in progress (lock {path}); this one does nothing"
        ) from exc
    try:
        yield path
    finally:
        lock.release()
