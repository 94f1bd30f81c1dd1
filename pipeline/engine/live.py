"""What a pass is doing right now that the state store does not hold, for the live view.

    meter = LiveMeter()
    with metering(meter):          # the pass's tasks, made inside, report to it
        await runner.run_once(max_wait=240)
    meter.uploads()                # {("alice", 1): UploadProgress(4, 10, 28_100_000, ...)}

Two things: each subject's upload (photos and bytes sent, and since when), and the inbox
folders still waiting to be taken in (settling, no ready marker) as of the last look. Both
change often and matter only while the pass runs, so they are counters in memory, never a
store write: the upload stage counts a photo once it is sent, not each chunk.

The stages find the pass's meter through a context variable, which whoever shows it sets
around the pass (:class:`~pipeline.notify.pass_hooks.PassHooks`); the tasks of the pass
inherit it. Without one they keep their counts to themselves. The counters are written on
the event loop and read from the view's thread: :meth:`LiveMeter.uploads` hands out copies.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace

__all__ = ["LiveMeter", "UploadProgress", "current_meter", "metering"]

_CURRENT: ContextVar[LiveMeter | None] = ContextVar("pipeline_live_meter", default=None)


@dataclass
class UploadProgress:
    """One subject version's upload. ``bytes_total`` starts as the photos' sizes on disk and
    becomes exact as each is sent (a converted photo's bytes differ from its file's); a
    photo found in the asset cache is done without sending anything."""

    photos_done: int
    photos_total: int
    bytes_done: int = 0
    bytes_total: int = 0
    started: float = 0.0
    updated: float = 0.0

    @property
    def rate(self) -> float | None:
        """Bytes per second since the upload began, or None before anything was sent."""
        elapsed = self.updated - self.started
        if self.bytes_done <= 0 or elapsed <= 0:
            return None
        return self.bytes_done / elapsed

    def sent(self, sent: int, estimate: int, now: float) -> None:
        """A photo went out: ``sent`` bytes, where ``estimate`` were counted for it."""
        self.photos_done += 1
        self.bytes_done += sent
        self.bytes_total += sent - estimate
        self.updated = now

    def cached(self, estimate: int) -> None:
        """A photo the service already has: done, and nothing of it to send."""
        self.photos_done += 1
        self.bytes_total -= estimate


class LiveMeter:
    """The live counters of one pass (see the module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._uploads: dict[tuple[str, int], UploadProgress] = {}
        self._waiting: tuple[str, ...] = ()

    def track_upload(self, name: str, version: int, progress: UploadProgress) -> None:
        """Show ``progress`` (which the upload stage goes on updating) for the version."""
        with self._lock:
            self._uploads[(name, version)] = progress

    def upload_finished(self, name: str, version: int) -> None:
        with self._lock:
            self._uploads.pop((name, version), None)

    def uploads(self) -> dict[tuple[str, int], UploadProgress]:
        """A copy of every upload in progress, by (subject, version)."""
        with self._lock:
            return {key: replace(value) for key, value in self._uploads.items()}

    def set_waiting(self, names: Sequence[str]) -> None:
        """The inbox folders waiting to be taken in, as the last look at the inbox found."""
        with self._lock:
            self._waiting = tuple(names)

    @property
    def waiting(self) -> tuple[str, ...]:
        with self._lock:
            return self._waiting


def current_meter() -> LiveMeter | None:
    """The meter of the pass this task belongs to, if anyone is watching it."""
    return _CURRENT.get()


@contextmanager
def metering(meter: LiveMeter) -> Iterator[LiveMeter]:
    """Make ``meter`` the one the stages report to, for what runs (and is started) inside."""
    token = _CURRENT.set(meter)
    try:
        yield meter
    finally:
        _CURRENT.reset(token)
