"""Live progress on a terminal, with rich: where every subject stands while a run goes on.

    async with ProgressView(console, take_snapshot, title=job_name):  # -> [SubjectSummary]
        await runner.run_once(...)

Every ``interval`` seconds the view takes a snapshot and redraws: the inbox folders waiting
to be taken in and the number of subjects at each stage, one row per upload going on
(photos and bytes sent, and the rate), one row per training in flight (its status,
progress and ETA as the API gives them), and the generations done of total per subject.
The waiting folders and the uploads come from the pass's
:class:`~pipeline.engine.live.LiveMeter`, in memory; the rest from the state. The snapshot
is taken in a worker thread, so reading the state of many subjects never holds up the run
on the event loop. On anything but a terminal (cron, a pipe, a log file) the view does
nothing at all: no snapshot, no output, no control codes; the structured log lines are the
record there.

Names, statuses and errors come from the inbox and the service: every cell and line is a
``Text`` from :func:`pipeline.views.textsafe.line`, never a markup string.

:func:`render` is the pure part, so a test can print it to a recording console.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import suppress
from types import TracebackType
from typing import Final

import structlog
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..engine.live import LiveMeter, UploadProgress
from ..store.states import (
    CANCELED,
    DONE,
    FAILED,
    GENERATING,
    REJECTED,
    SUBMITTING,
    TRAINED,
    TRAINING,
    UPLOADED,
    UPLOADING,
    VALIDATED,
)
from .console import STATE_STYLES
from .summary import SubjectSummary
from .textsafe import line, printable

__all__ = ["ProgressView", "STAGES", "format_eta", "format_upload", "render"]

log = structlog.get_logger(__name__)

#: Stages shown in the header, each with the subject states it covers, in flow order. They
#: follow ``waiting``: the inbox folders not taken in yet (settling, no ready marker).
STAGES: Final[tuple[tuple[str, frozenset[str]], ...]] = (
    ("queued", frozenset({VALIDATED})),
    ("uploading", frozenset({UPLOADING, UPLOADED})),
    ("training", frozenset({SUBMITTING, TRAINING})),
    ("generating", frozenset({TRAINED, GENERATING})),
    ("done", frozenset({DONE})),
    ("rejected", frozenset({REJECTED})),
    ("failed", frozenset({FAILED, CANCELED})),
)
_STAGE_STYLES: Final = {"done": "green", "rejected": "yellow", "failed": "red"}
IN_TRAINING: Final = frozenset({SUBMITTING, TRAINING})
#: Rows shown per table; the rest are counted in one line.
MAX_ROWS: Final = 12
MAX_ERRORS: Final = 5
BAR_WIDTH: Final = 28


def render(
    subjects: Sequence[SubjectSummary], *, title: str | None = None,
    uploads: Mapping[tuple[str, int], UploadProgress] | None = None,
    waiting: Sequence[str] = (),
) -> RenderableType:
    """One frame of the live view for ``subjects``; ``uploads`` by (subject, version) and
    the ``waiting`` inbox folders as the pass's meter has them."""
    parts: list[RenderableType] = [_header(subjects, title, len(waiting))]
    live = uploads or {}
    sending = [(s, live.get((s.name, s.version))) for s in subjects
               if s.state == UPLOADING or (s.name, s.version) in live]
    if sending:
        parts += [Text(""), _uploads_table(sending)]
    trainings = [s for s in subjects if s.state in IN_TRAINING]
    if trainings:
        parts += [Text(""), _trainings_table(trainings)]
    generating = sorted((s for s in subjects if s.prompts_total),
                        key=lambda s: (s.state == DONE, s.name))
    if generating:
        parts += [Text(""), _generations_table(generating)]
    failed = [s for s in subjects if s.state in (FAILED, CANCELED) and s.error]
    if failed:
        parts.append(Text(""))
    for s in failed[:MAX_ERRORS]:
        parts.append(line((f"{_label(s)}: ", "bold red"), (s.error or "", "red")))
    if len(failed) > MAX_ERRORS:
        parts.append(line((f"... and {len(failed) - MAX_ERRORS} more failed", "red")))
    return Group(*parts)


def format_eta(seconds: int | None) -> str:
    """An ETA for people: ``45s``, ``3m 05s``, ``2h 07m``; empty when unknown.

    >>> format_eta(185)
    '3m 05s'
    """
    if seconds is None or seconds < 0:
        return ""
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_upload(progress: UploadProgress) -> str:
    """``uploading 4/10 photos, 28.1/71.0 MB, 1.9 MB/s`` (the rate once something is sent).

    >>> format_upload(UploadProgress(4, 10, 28_100_000, 71_000_000, started=0, updated=14.8))
    'uploading 4/10 photos, 28.1/71.0 MB, 1.9 MB/s'
    """
    text = (f"uploading {progress.photos_done}/{progress.photos_total} photos, "
            f"{progress.bytes_done / 1e6:.1f}/{max(progress.bytes_total, 0) / 1e6:.1f} MB")
    rate = progress.rate
    return text if rate is None else f"{text}, {rate / 1e6:.1f} MB/s"


def _header(subjects: Sequence[SubjectSummary], title: str | None, waiting: int) -> Text:
    text = Text()
    if title:
        text.append(printable(f"job {title}"), style="bold")
        text.append(f" \u00b7 {len(subjects)} subjects\n", style="")
    counts = [("waiting", waiting)]
    counts += [(stage, sum(1 for s in subjects if s.state in states)) for stage, states in STAGES]
    for number, (stage, count) in enumerate(counts):
        if number:
            text.append("  \u2502  ", style="dim")
        if count:
            text.append(f"{stage} ")
            text.append(str(count), style=f"bold {_STAGE_STYLES.get(stage, 'cyan')}")
        else:
            text.append(f"{stage} 0", style="dim")
    return text


def _uploads_table(sending: Sequence[tuple[SubjectSummary, UploadProgress | None]]) -> Table:
    table = Table(title="uploads", title_justify="left", expand=False,
                  title_style="bold", box=None, padding=(0, 2, 0, 0))
    for column in ("subject", "", "sent"):
        table.add_column(column, no_wrap=True)
    for s, progress in sending[:MAX_ROWS]:
        if progress is None:
            table.add_row(line(_label(s)), Text("starting", style="dim"), line())
            continue
        bar = ProgressBar(total=max(progress.bytes_total, 1),
                          completed=max(0, min(progress.bytes_done, progress.bytes_total)),
                          width=BAR_WIDTH, complete_style="cyan", finished_style="cyan")
        table.add_row(line(_label(s)), bar, line(format_upload(progress)))
    _more(table, len(sending), 3)
    return table


def _trainings_table(subjects: Sequence[SubjectSummary]) -> Table:
    table = Table(title="trainings in flight", title_justify="left", expand=False,
                  title_style="bold", box=None, padding=(0, 2, 0, 0))
    for column in ("subject", "status", "progress", "", "eta"):
        table.add_column(column, no_wrap=True)
    for s in subjects[:MAX_ROWS]:
        status = s.task_status or ("submitting" if s.state == SUBMITTING else "")
        if s.progress is None:
            bar: RenderableType = Text("waiting for the service", style="dim")
            percent = ""
        else:
            bar = ProgressBar(total=100, completed=max(0, min(100, s.progress)),
                              width=BAR_WIDTH, complete_style="cyan", finished_style="cyan")
            percent = f"{s.progress}%"
        table.add_row(line(_label(s)), line((status, "cyan")), bar, line(percent),
                      line(format_eta(s.eta)))
    _more(table, len(subjects), 5)
    return table


def _generations_table(subjects: Sequence[SubjectSummary]) -> Table:
    table = Table(title="generations", title_justify="left", expand=False,
                  title_style="bold", box=None, padding=(0, 2, 0, 0))
    for column in ("subject", "state", "prompts", "", "pictures"):
        table.add_column(column, no_wrap=True)
    for s in subjects[:MAX_ROWS]:
        bar = ProgressBar(total=s.prompts_total, completed=s.prompts_done, width=BAR_WIDTH,
                          complete_style="cyan", finished_style="green")
        table.add_row(line(_label(s)), line((s.state, STATE_STYLES.get(s.state, ""))), bar,
                      line(f"{s.prompts_done}/{s.prompts_total}"), line(str(len(s.outputs))))
    _more(table, len(subjects), 5)
    return table


def _more(table: Table, total: int, columns: int) -> None:
    if total > MAX_ROWS:
        table.add_row(line((f"... {total - MAX_ROWS} more", "dim")),
                      *[line() for _ in range(columns - 1)])


def _label(s: SubjectSummary) -> str:
    return s.name if s.version == 1 else f"{s.name} (v{s.version})"


class ProgressView:
    """A live view of a run, redrawn every ``interval`` seconds while the block runs.

    ``snapshot`` is called in a worker thread, never on the event loop, and always in the
    same one: ``executor`` when given (it should have a single thread), else a thread of the
    view's own. A store that ``snapshot`` opens on its first call is therefore used by the
    thread that made it on every call, as an sqlite connection must be. When it raises, the
    last frame stays and the error is logged once. On a console that is not a terminal the
    view is inert. With ``transient`` (the default) the view is erased at the end, leaving
    the screen to the final summary.
    """

    def __init__(
        self,
        console: Console,
        snapshot: Callable[[], Sequence[SubjectSummary]],
        *,
        title: str | None = None,
        interval: float = 0.5,
        transient: bool = True,
        executor: Executor | None = None,
        meter: LiveMeter | None = None,
    ) -> None:
        self._console = console
        self._snapshot = snapshot
        self._meter = meter
        self._title = title
        self._interval = interval
        self._transient = transient
        self._executor = executor
        self._own_executor: ThreadPoolExecutor | None = None
        self._live: Live | None = None
        self._task: asyncio.Task[None] | None = None
        self._snapshot_failed = False

    @property
    def active(self) -> bool:
        """Whether this view draws anything (a real, capable terminal)."""
        return self._console.is_terminal and not self._console.is_dumb_terminal

    async def __aenter__(self) -> ProgressView:
        if not self.active:
            return self
        if self._executor is None:
            self._own_executor = ThreadPoolExecutor(1, thread_name_prefix="progress-view")
            self._executor = self._own_executor
        self._live = Live(await self._frame() or Text(""), console=self._console,
                          auto_refresh=False, transient=self._transient)
        self._live.start(refresh=True)
        self._task = asyncio.create_task(self._loop(), name="progress-view")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            if self._live is not None:
                await self.refresh()
                self._live.stop()
                self._live = None
        finally:
            if self._own_executor is not None:
                self._own_executor.shutdown(wait=False, cancel_futures=True)
                self._own_executor = self._executor = None

    async def refresh(self) -> None:
        """Take a snapshot now and redraw (nothing when the view is not running)."""
        if self._live is None:
            return
        frame = await self._frame()
        if frame is not None and self._live is not None:
            self._live.update(frame, refresh=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.refresh()

    async def _frame(self) -> RenderableType | None:
        try:
            loop = asyncio.get_running_loop()
            subjects = await loop.run_in_executor(self._executor, self._snapshot)
        except Exception as exc:  # the view must never break the run it shows
            if not self._snapshot_failed:
                log.warning("progress.snapshot_failed", error=f"{type(exc).__name__}: {exc}")
                self._snapshot_failed = True
            return None
        if self._meter is None:
            return render(subjects, title=self._title)
        return render(subjects, title=self._title, uploads=self._meter.uploads(),
                      waiting=self._meter.waiting)
