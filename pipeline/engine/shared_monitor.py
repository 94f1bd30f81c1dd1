"""One poller of trainings for all the workers of a job.

With several workers the :class:`~pipeline.engine.stages.monitor.TrainingMonitor` runs on
the one holding the ``poller`` role: it follows every training of the job, whichever
worker leases the subject, and writes what it learns to the store. A driver waiting for a
training reads its subject from the store instead of asking the service. The API sees
one poller's O(1) requests a cycle however many workers there are; when the poller dies
its role expires and another worker's monitor takes over.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from ..store.coordination import POLLER
from ..store.protocol import SubjectRow
from ..store.states import TRAINING
from .stages.context import StageContext
from .stages.monitor import TrainingMonitor
from .work_share import SharedWorker

log = structlog.get_logger(__name__)


class SharedMonitor:
    """:class:`TrainingMonitor`'s interface (``wait``, ``run``) for a shared job."""

    def __init__(self, ctx: StageContext, worker: SharedWorker) -> None:
        self._ctx = ctx
        self._worker = worker
        self._inner = TrainingMonitor(ctx)
        self._followed: dict[int, asyncio.Task[SubjectRow]] = {}

    async def wait(self, subject: SubjectRow) -> SubjectRow:
        """Return the subject once the poller (whichever worker it is on) settled it."""
        store, clock = self._ctx.store, self._ctx.clock
        while True:
            row = store.subject(subject.id)
            if row.state != TRAINING:
                return row
            await clock.sleep(self._ctx.settings.poll_interval_min)

    async def run(self) -> None:
        """While this worker holds the poller role, follow every training of the job."""
        polling = asyncio.create_task(self._inner.run(), name="monitor:poll")
        try:
            while True:
                if polling.done():
                    polling.result()  # bad credentials end the pass, as a lone monitor's do
                if self._worker.take_role(POLLER):
                    self._follow_all()
                else:
                    await self._drop_all()
                await self._ctx.clock.sleep(self._ctx.settings.poll_interval_min)
        finally:
            polling.cancel()
            await self._drop_all()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await polling

    def _follow_all(self) -> None:
        for subject_id in [i for i, t in self._followed.items() if t.done()]:
            task = self._followed.pop(subject_id)
            if not task.cancelled() and task.exception() is not None:
                log.warning("monitor.follow_failed", subject_id=subject_id,
                            error=str(task.exception()))
        for row in self._ctx.store.subjects(self._ctx.job_name, states=(TRAINING,)):
            if row.id not in self._followed and row.task_id is not None:
                self._followed[row.id] = asyncio.create_task(
                    self._inner.wait(row), name=f"monitor:{row.name}")

    async def _drop_all(self) -> None:
        tasks = list(self._followed.values())
        self._followed.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
