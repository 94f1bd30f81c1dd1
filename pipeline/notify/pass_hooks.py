"""What runs around a pass, outside the pipeline proper: the live progress view, the
``subject_failed`` notifications, and at the end the report and ``run_finished``.

It reads the state store through a read-only connection of its own (WAL lets it read while
the run writes), so it never slows the stages down nor creates, upgrades or write-locks the
store, and a failure here never fails the run. The runner makes the store on a job's first
pass and upgrades an older one, so until the store can be read there is simply nothing to
show yet.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog
from rich.console import Console

from ..config import Settings
from ..engine.runner import RunResult
from ..errors import PipelineError
from ..jobfile.loading import JobConfig
from ..store.location import open_reader, state_file
from ..store.sqlite import SqliteStore
from ..store.states import CANCELED, FAILED
from ..views.progress import ProgressView
from ..views.report import write_job_report
from ..views.summary import SubjectSummary, summarize
from .delivery import RUN_FINISHED, SUBJECT_FAILED, Event, notify, payload_for

log = structlog.get_logger(__name__)

#: Seconds between looks for newly failed subjects.
FAILURE_CHECK_SECONDS = 2.0


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
        self._store: SqliteStore | None = None
        self._progress: ProgressView | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._known_failed: set[tuple[str, int]] = set()
        self._unread_at_start = False
        self._sent: set[asyncio.Task[object]] = set()

    def _snapshot(self) -> list[SubjectSummary]:
        store = self._reader()
        return summarize(store, self._job.job.name) if store is not None else []

    def _reader(self) -> SqliteStore | None:
        """The read-only store, opened at the first look that finds one usable: before the
        runner has made (or upgraded) it there is nothing to read, and the runner, not
        this, reports a store that cannot be used."""
        if self._store is None:
            try:
                path = state_file(self._job, self._settings)
                if not path.is_file():
                    return None
                self._store = SqliteStore(path, read_only=True)
            except PipelineError as exc:
                log.debug("hooks.store_not_ready", reason=str(exc))
                return None
            if self._unread_at_start:
                # It was there but unreadable when the pass began (an older schema that the
                # runner upgrades first): what had failed before is not news of this pass.
                self._known_failed |= {
                    (s.name, s.version) for s in summarize(self._store, self._job.job.name)
                    if s.state in (FAILED, CANCELED)
                }
        return self._store

    async def __aenter__(self) -> Self:
        with contextlib.suppress(PipelineError):  # the runner says what is wrong with it
            self._unread_at_start = state_file(self._job, self._settings).is_file()
        self._known_failed = self._failed_now()
        self._progress = ProgressView(self._console, self._snapshot, title=self._job.job.name)
        await self._progress.__aenter__()
        if self._job.on_complete is not None:
            self._watcher = asyncio.create_task(self._watch_failures())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self._progress is not None:
            await self._progress.__aexit__(exc_type, exc, tb)
        if self._sent:
            await asyncio.gather(*self._sent, return_exceptions=True)
        if self._store is not None:
            self._store.close()

    async def finished(self, result: RunResult) -> Path | None:
        """Write the report and send ``run_finished``; returns the HTML report's path."""
        html: Path | None = None
        try:
            html = await asyncio.to_thread(self._write_report)
        except (OSError, PipelineError) as exc:
            log.error("report.failed", error=str(exc))
        if self._job.on_complete is not None:
            self._check_failures()  # failures since the last look are told first
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

    def _failed_now(self) -> set[tuple[str, int]]:
        return {(s.name, s.version) for s in self._snapshot() if s.state in (FAILED, CANCELED)}

    async def _watch_failures(self) -> None:
        while True:
            await asyncio.sleep(self._check_every)
            self._check_failures()

    def _check_failures(self) -> None:
        """Send ``subject_failed`` (in the background) for subjects that failed since the
        last look."""
        failed = self._failed_now()
        new = failed - self._known_failed
        self._known_failed = failed
        if new:
            subjects = [s for s in self._snapshot() if (s.name, s.version) in new]
            task = asyncio.create_task(self._notify(SUBJECT_FAILED, subjects, None))
            self._sent.add(task)
            task.add_done_callback(self._sent.discard)

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
