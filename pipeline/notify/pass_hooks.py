"""What runs around a pass, outside the pipeline proper: the live progress view, the
``subject_failed`` notifications, and at the end the report and ``run_finished``.

It reads the state store through a read-only connection of its own (WAL lets it read while
the run writes), so it never slows the stages down nor creates, upgrades or write-locks the
store, and a failure here never fails the run. Every read is done in one worker thread of
its own, which opens that connection and alone uses it (an sqlite connection belongs to the
thread that made it): the event loop, which runs the stages, never waits on a read here.
The look for new failures reads only the failed subjects; the progress view reads again
only the subjects that are not settled (:class:`~pipeline.views.summary.Summaries`).

The runner makes the store on a job's first pass and upgrades an older one, so until the
store can be read there is simply nothing to show yet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import structlog
from rich.console import Console

from ..config import Settings
from ..engine.live import LiveMeter, metering
from ..engine.runner import RunResult
from ..errors import PipelineError
from ..jobfile.loading import JobConfig
from ..store.location import open_reader, reader_once_made, state_file
from ..store.queries import SqlStore
from ..store.states import CANCELED, FAILED
from ..views.progress import ProgressView
from ..views.report import write_job_report
from ..views.summary import SubjectSummary, Summaries, summarize_subject
from .delivery import RUN_FINISHED, SUBJECT_FAILED, Event, notify, payload_for

log = structlog.get_logger(__name__)

#: Seconds between looks for newly failed subjects.
FAILURE_CHECK_SECONDS = 2.0
_FAILED_STATES = (FAILED, CANCELED)

T = TypeVar("T")


class PassHooks:
    """``async with PassHooks(...) as hooks: result = await run(); await hooks.finished(result)``"""

    def __init__(
        self, job: JobConfig, settings: Settings, console: Console, *,
        check_every: float = FAILURE_CHECK_SECONDS,
    ) -> None:
        self._job = job
        self._settings = settings
        self._console = console
        self._check_every = check_every
        self._reads = ThreadPoolExecutor(1, thread_name_prefix="pass-hooks")
        # Used in the reader thread only (see the module doc).
        self._store: SqlStore | None = None
        self._summaries = Summaries(job.job.name)
        self._known_failed: set[tuple[str, int]] = set()
        self._unread_at_start = False
        #: The pass's live counters (uploads, waiting folders), shown by the progress view.
        self.meter = LiveMeter()
        self._metering = contextlib.ExitStack()
        #: Each subject version's warnings before the pass (see :attr:`warnings_before`).
        self._warnings_before: dict[tuple[str, int], frozenset[str]] = {}
        # Used on the event loop only.
        self._progress: ProgressView | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._sent: set[asyncio.Task[object]] = set()

    async def _read(self, work: Callable[[], T]) -> T:
        """``work()`` in the reader thread, the one that may use the read-only store."""
        return await asyncio.get_running_loop().run_in_executor(self._reads, work)

    async def snapshot(self) -> list[SubjectSummary]:
        """Every subject's summary, read in the reader thread; empty before the store is."""
        return await self._read(self._snapshot)

    def _snapshot(self) -> list[SubjectSummary]:
        store = self._reader()
        return self._summaries(store) if store is not None else []

    def _reader(self) -> SqlStore | None:
        """The read-only store, opened at the first look that finds one usable: before the
        runner has made (or upgraded) it there is nothing to read, and the runner, not
        this, reports a store that cannot be used."""
        if self._store is None:
            self._store = reader_once_made(self._job, self._settings)
            if self._store is None:
                return None
            if self._unread_at_start:
                # It was there but unreadable when the pass began (an older schema that the
                # runner upgrades first): what had failed before is not news of this pass.
                self._known_failed |= self._failed_now(self._store)
        return self._store

    async def __aenter__(self) -> Self:
        with contextlib.suppress(PipelineError):  # the runner says what is wrong with it
            self._unread_at_start = (self._settings.state_url is not None
                                     or state_file(self._job, self._settings).is_file())
        await self._read(self._remember_failed)
        # Set in this task, so the pass run after this (in the same task) and every task it
        # starts report to the meter.
        self._metering.enter_context(metering(self.meter))
        self._progress = ProgressView(self._console, self._snapshot, title=self._job.job.name,
                                      executor=self._reads, meter=self.meter)
        await self._progress.__aenter__()
        if self._job.on_complete is not None:
            self._watcher = asyncio.create_task(self._watch_failures())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._watcher is not None:
                self._watcher.cancel()
                await asyncio.gather(self._watcher, return_exceptions=True)
            if self._progress is not None:
                await self._progress.__aexit__(exc_type, exc, tb)
            if self._sent:
                await asyncio.gather(*self._sent, return_exceptions=True)
            await self._read(self._close)
        finally:
            self._metering.close()
            self._reads.shutdown(wait=False)

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def finished(self, result: RunResult) -> Path | None:
        """Write the report and send ``run_finished``; returns the HTML report's path."""
        html: Path | None = None
        try:
            html = await asyncio.to_thread(self._write_report)
        except (OSError, PipelineError) as exc:
            log.error("report.failed", error=str(exc))
        if self._job.on_complete is not None:
            await self._check_failures()  # failures since the last look are told first
            if self._sent:
                await asyncio.gather(*self._sent, return_exceptions=True)
            await self._notify(RUN_FINISHED, result.subjects, html)
        return html

    def _write_report(self) -> Path | None:
        # Runs in a worker thread, and an sqlite connection belongs to the thread that made it.
        store = open_reader(self._job, self._settings)
        if store is None:  # a pass makes the store; a Runner given its own store did not
            return None
        with store:
            return write_job_report(self._job, store)[1]

    async def _watch_failures(self) -> None:
        while True:
            await asyncio.sleep(self._check_every)
            await self._check_failures()

    async def _check_failures(self) -> None:
        """Send ``subject_failed`` (in the background) for subjects that failed since the
        last look."""
        new = await self._read(self._newly_failed)
        if new:
            task = asyncio.create_task(self._notify(SUBJECT_FAILED, new, None))
            self._sent.add(task)
            task.add_done_callback(self._sent.discard)

    def _newly_failed(self) -> list[SubjectSummary]:
        """(In the reader thread.) The summaries of the subjects failed since the last look:
        one query for the failed ones, and a summary of each new one only."""
        store = self._reader()
        if store is None:
            return []
        rows = store.subjects(self._job.job.name, states=_FAILED_STATES)
        failed = {(row.name, row.version) for row in rows}
        new = [row for row in rows if (row.name, row.version) not in self._known_failed]
        self._known_failed = failed
        return [summarize_subject(store, row) for row in new]

    @property
    def warnings_before(self) -> Mapping[tuple[str, int], frozenset[str]]:
        """Each subject version's warnings as the pass found them, by (name, version): the
        end of the pass prints only the others, the ones recorded during it."""
        return self._warnings_before

    def _remember_failed(self) -> None:
        """(In the reader thread.) What failed before this pass is not news, nor is a
        warning recorded before it."""
        store = self._reader()
        if store is not None:
            self._known_failed = self._failed_now(store)
            self._warnings_before = {
                (row.name, row.version): frozenset(row.warning_list)
                for row in store.subjects(self._job.job.name)
            }

    def _failed_now(self, store: SqlStore) -> set[tuple[str, int]]:
        rows = store.subjects(self._job.job.name, states=_FAILED_STATES)
        return {(row.name, row.version) for row in rows}

    async def _notify(
        self, event: Event, subjects: list[SubjectSummary], report: Path | None
    ) -> None:
        assert self._job.on_complete is not None
        key = self._settings.api_key
        payload = payload_for(
            self._job.job.name, subjects, event, report=report,
            secrets=[key.get_secret_value()] if key else [],
        )
        await notify(self._job.on_complete, payload)  # never raises: logs what went wrong
