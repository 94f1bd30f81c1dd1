"""The per-subject driver tasks of a pass: one per subject this process may drive.

:class:`Drivers` starts a :func:`~pipeline.engine.subject_loop.drive` task for each subject
(with several workers, each subject the worker leases: :mod:`pipeline.engine.work_share`),
stops and holds them for a person's request, and remembers a refused key, after which
nothing starts again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from ..errors import BadCredentials
from ..store.protocol import SubjectRow
from ..store.states import ACTIVE_STATES, FAILED
from .subject_loop import Services, drive
from .work_share import SoleWorker

log = structlog.get_logger(__name__)

#: The states a driver advances (a failed training may be tried again).
DRIVEN_STATES = (*ACTIVE_STATES, FAILED)


class Drivers:
    """The per-subject driver tasks of a run: one per subject, started once."""

    def __init__(
        self, worker: SoleWorker | None = None,
        on_taken: Callable[[SubjectRow], None] | None = None,
    ) -> None:
        #: Which subjects this process may drive (all of them, or its leases).
        self.worker = worker or SoleWorker()
        #: Told of each subject this worker newly leases, before its driver starts.
        self._on_taken = on_taken
        self._tasks: dict[int, asyncio.Task[SubjectRow]] = {}
        #: Subjects a person's request is being carried out for: not started meanwhile.
        self._held: set[int] = set()
        self._credentials: BadCredentials | None = None
        self._failed = asyncio.Event()

    def start_all(self, services: Services) -> None:
        store = services.ctx.store
        rows = store.subjects(services.ctx.job_name, states=DRIVEN_STATES)
        self._claim([r for r in rows if not self.worker.holds(r.id)])  # one transaction
        for subject in rows:
            if self.worker.holds(subject.id):  # the others are other workers'
                self._start(services, subject)

    def start(self, services: Services, subject: SubjectRow) -> None:
        """Start the driver of ``subject`` (a version intake just recorded) unless another
        worker leases it; see :meth:`_start`."""
        if self.worker.holds(subject.id) or self._claim([subject]):
            self._start(services, subject)

    def _start(self, services: Services, subject: SubjectRow) -> None:
        """Start the driver of ``subject`` unless it runs already or is held, or the key
        has been refused (every request would be refused too: nothing starts again)."""
        if self._failed.is_set():
            return
        task = self._tasks.get(subject.id)
        if subject.id not in self._held and (task is None or task.done()):
            task = asyncio.create_task(drive(services, subject), name=f"drive:{subject.name}")
            self._tasks[subject.id] = task
            self.watch_task(task)

    def _claim(self, rows: list[SubjectRow]) -> list[SubjectRow]:
        """Lease what this worker may of ``rows`` (none held yet); the subjects taken."""
        taken = self.worker.claim(rows, DRIVEN_STATES) if rows else []
        if self._on_taken is not None:
            for subject in taken:
                self._on_taken(subject)
        return taken

    @property
    def failed(self) -> asyncio.Event:
        """Set when a driver or the monitor met bad credentials."""
        return self._failed

    def watch_task(self, task: asyncio.Task[Any]) -> None:
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, BadCredentials):
            self._credentials = error
            self._failed.set()
        elif error is not None:
            log.error("driver.crashed", task=task.get_name(), error=repr(error))

    async def wait(self, *, timeout: float, stop: asyncio.Event) -> None:
        pending = [t for t in self._tasks.values() if not t.done()]
        if not pending:
            return
        everything = asyncio.gather(*pending, return_exceptions=True)
        await first_of(everything, stop.wait(), self._failed.wait(), timeout=timeout)

    async def stop(self, subject: SubjectRow | None, *, hold: bool = False) -> None:
        """Stop the driver of ``subject`` (its paid calls in flight are shielded); with
        ``hold``, it is not started again until :meth:`release`."""
        if subject is None:
            return
        if hold:
            self._held.add(subject.id)
        task = self._tasks.get(subject.id)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def lost(self, subject_ids: set[int]) -> None:
        """Another worker took these subjects over: stop driving them here."""
        for subject_id in subject_ids:
            task = self._tasks.get(subject_id)
            if task is not None:
                task.cancel()

    def release(self, subject: SubjectRow | None) -> None:
        if subject is not None:
            self._held.discard(subject.id)

    async def cancel_all(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def raise_credentials(self) -> None:
        if self._credentials is not None:
            raise self._credentials


async def first_of(*waitables: Awaitable[Any], timeout: float | None) -> None:
    """Wait until the first of ``waitables`` finishes or ``timeout`` passes; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waitables]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
