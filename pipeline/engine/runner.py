"""The runner wires the stages for one job: it owns the lock, the store, the API session,
the drivers' tasks, the deadline and the signals.

    summary = await Runner(job, settings).run_once(max_wait=240)

``run_once`` is one cron pass: take in the inbox, advance every subject as far as it goes,
wait for in-flight work up to ``max_wait``, stop cleanly. ``watch`` does the same for as
long as it runs, reacting to the inbox as folders settle.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import structlog

from ..api import ApiClient
from ..api.client import Reachability
from ..clock import Clock, SystemClock
from ..config import Settings
from ..errors import PipelineError, StateConflict, StateUnreachable
from ..inputs.inbox import watch_inbox
from ..inputs.photo_cache import CACHE_FILE, MeasureCache, PhotoCache
from ..jobfile.loading import JobConfig
from ..redact import Scrubber
from ..store.coordination import INTAKE
from ..store.location import open_store, photo_cache_dir, state_dir
from ..store.lock import job_lock
from ..store.postgres import PostgresStore
from ..store.protocol import StateStore
from ..views.summary import (
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_UNREACHABLE,
    SubjectSummary,
    exit_code_for,
    exit_code_for_error,
    summarize,
)
from .concurrency import supervise
from .control import act
from .drivers import Drivers, first_of
from .outbox import clean_partials, clean_subject_partials
from .spend_guard import SpendGuard, new_pass_id
from .stages.context import StageContext
from .stages.intake import IntakeResult, intake_off_loop
from .subject_loop import Services
from .work_share import SharedWorker, SoleWorker, new_owner

log = structlog.get_logger(__name__)

#: How often ``watch`` looks at the inbox again without being told of a change.
RESCAN_SECONDS = 30.0
#: With several workers, how often a round claims work: new subjects wait at most this long
#: for the other workers (20 s with a lease's third made a benchmark's workers start late).
SHARED_ROUND_SECONDS = 5.0
#: With several workers, a temp file in the outbox untouched for this long was left by a
#: worker that died (a live download writes at least every stall timeout).
PARTIALS_ABANDONED_AFTER = 600.0


@dataclass
class RunResult:
    """What a pass leaves: every subject's summary, the exit code, and whether it was stopped."""

    subjects: list[SubjectSummary]
    exit_code: int
    signal: int | None = None
    waiting: list[str] = field(default_factory=list)
    #: Why the spend ceiling kept paid requests from being sent in this pass, in order.
    ceiling: list[str] = field(default_factory=list)


class Runner:
    """Runs one job. Tests inject a clock, a session and a store."""

    def __init__(
        self,
        job: JobConfig,
        settings: Settings,
        *,
        clock: Clock | None = None,
        session: aiohttp.ClientSession | None = None,
        store: StateStore | None = None,
        handle_signals: bool = False,
        on_round: Callable[[float, bool, Reachability], None] | None = None,
    ) -> None:
        self.job = job
        self.settings = settings
        self.clock = clock or SystemClock()
        self._session = session
        self._store = store
        self._handle_signals = handle_signals
        self._signal: int | None = None
        self._stop = asyncio.Event()
        self._photo_cache: MeasureCache | None = None
        #: Told at the end of each round of ``watch`` (its time, whether the spend ceiling
        #: held a request back, and the client's live count of answered requests): the
        #: metrics view's hook.
        self._on_round = on_round
        #: What was last logged as ``inbox.waiting``: it is logged again only when it changes.
        self._waiting_logged: frozenset[tuple[str, str]] = frozenset()
        #: This process's part of the job: everything, or its leases (see work_share).
        self._worker: SoleWorker = SoleWorker()

    def stop(self, signum: int | None = None) -> None:
        """Stop taking new work; the current pass ends cleanly."""
        self._signal = signum
        self._stop.set()

    async def run_once(self, *, max_wait: float) -> RunResult:
        """One pass for cron; ``max_wait`` counts from its start, intake included."""
        started = self.clock.now()

        async def body(services: Services, drivers: Drivers) -> list[str]:
            taken = await self._intake(services, drivers)
            if not self._stop.is_set():
                drivers.start_all(services)
            left = max(0.0, started + max_wait - self.clock.now())
            await drivers.wait(timeout=left, stop=self._stop)
            return [f.name for f in taken.waiting]

        return await self._session_scope(body)

    async def watch(self) -> RunResult:
        """Run until stopped, taking in folders as they settle."""

        async def body(services: Services, drivers: Drivers) -> list[str]:
            changed = asyncio.Event()
            watcher = asyncio.create_task(supervise(
                "inbox watcher", lambda: self._watch_inbox(changed), sleep=self.clock.sleep
            ))
            try:
                while not self._stop.is_set():
                    taken = await self._round(services, drivers)
                    if self._on_round is not None:
                        self._on_round(self.clock.now(), services.ctx.spend.stopped,
                                       services.ctx.api.reachability)
                    rescan = self._rescan_delay(taken)
                    changed.clear()
                    await first_of(changed.wait(), self._stop.wait(), drivers.failed.wait(),
                                    timeout=rescan)
                    if drivers.failed.is_set():
                        break  # a refused key: nothing else can succeed either
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            return []

        return await self._session_scope(body)

    # --- plumbing -------------------------------------------------------------------------

    async def _session_scope(
        self, body: Callable[[Services, Drivers], Awaitable[list[str]]]
    ) -> RunResult:
        started = self.clock.now()
        spend = SpendGuard(self.job, new_pass_id(started))
        # Every line of the pass, from every task it starts, carries these.
        with structlog.contextvars.bound_contextvars(job=self.job.job.name,
                                                     pass_id=spend.pass_id):
            log.info("pass.started")
            try:
                result, counts = await self._pass(body, started, spend)
            except BaseException as exc:  # a refused key, a held lock: the pass still ends
                log.error("pass.finished", exit_code=exit_code_for_error(exc),
                          duration=round(self.clock.now() - started, 3),
                          error=type(exc).__name__)
                raise
            by_state = Counter(s.state for s in result.subjects)
            log.info(
                "pass.finished", exit_code=result.exit_code,
                duration=round(self.clock.now() - started, 3),
                subjects=dict(sorted(by_state.items())),
                pictures_saved=counts["pictures_saved"], loras_saved=counts["loras_saved"],
                trainings_submitted=counts["trainings_submitted"],
                **({"signal": signal.Signals(result.signal).name} if result.signal else {}),
            )
            return result

    async def _pass(
        self, body: Callable[[Services, Drivers], Awaitable[list[str]]], started: float,
        spend: SpendGuard,
    ) -> tuple[RunResult, Counter[str]]:
        counts: Counter[str] = Counter()
        reached = Reachability()
        shared = self.settings.state_url is not None
        # Several workers share a job through PostgreSQL: no job lock (the leases say who
        # does what), and each host keeps its photo measures in a cache of its own.
        lock = (contextlib.nullcontext() if shared
                else job_lock(state_dir(self.job, self.settings), self.job.job.name))
        cache_file = photo_cache_dir(self.job, self.settings) / CACHE_FILE
        with lock, PhotoCache.open(cache_file) as cache:
            self._photo_cache = cache
            store = self._store or open_store(
                self.job, self.settings, scrub=Scrubber.for_key(self.settings.api_key),
                owner=new_owner() if shared else None,
            )
            worker = SoleWorker()
            try:
                worker = self._worker_of(store)
                if not worker.shared:
                    clean_partials(self._job_root)
                waiting, reached = await self._with_api(store, worker, spend, counts, body)
                subjects = summarize(store, self.job.job.name)
            finally:
                self._leave(worker)
                if self._store is None:
                    store.close()
        code = exit_code_for(subjects, since=started, ceiling_reached=spend.stopped,
                             unreachable=reached.unreachable)
        if code == EXIT_UNREACHABLE:
            log.error(
                "pass.unreachable", base_url=self.settings.base_url,
                failed_requests=reached.unanswered, last_error=reached.last_error,
                hint="not one request to the service was answered: check LORA_BASE_URL and "
                     "the network; the next pass tries again",
            )
        if self._signal is not None:
            code = EXIT_SIGINT if self._signal == signal.SIGINT else EXIT_SIGTERM
        return RunResult(subjects, code, self._signal, waiting, list(spend.refusals)), counts

    def _worker_of(self, store: StateStore) -> SoleWorker:
        if isinstance(store, PostgresStore) and store.owner is not None:
            return SharedWorker(store, self.job.job.name, self.clock,
                                ttl=self.settings.lease_seconds)
        return SoleWorker()

    @staticmethod
    def _leave(worker: SoleWorker) -> None:
        """Give the leases back for the others to take at once; when the database cannot
        be told, they expire instead (what stopped the pass is the error worth raising)."""
        try:
            worker.leave()
        except PipelineError as exc:
            log.warning("worker.leases_kept", error=str(exc),
                        hint="they expire after LORA_LEASE_SECONDS; the others go on then")

    @property
    def _job_root(self) -> Path:
        """``outbox/<job>``: the job's results."""
        return self.job.job.outbox / self.job.job.name

    async def _with_api(
        self, store: StateStore, worker: SoleWorker, spend: SpendGuard, counts: Counter[str],
        body: Callable[[Services, Drivers], Awaitable[list[str]]],
    ) -> tuple[list[str], Reachability]:
        async with ApiClient(self.settings, session=self._session, clock=self.clock) as api:
            ctx = StageContext(self.job, self.settings, api, store, self.clock,
                               spend_guard=spend, counts=counts)
            services = Services.create(ctx, worker)
            taken_over = functools.partial(clean_subject_partials, self._job_root)
            drivers = Drivers(worker, on_taken=taken_over if worker.shared else None)
            self._worker = worker
            monitor = asyncio.create_task(
                supervise("monitor", services.monitor.run, sleep=self.clock.sleep),
                name="monitor",
            )
            drivers.watch_task(monitor)
            heartbeat = asyncio.create_task(supervise(
                "heartbeat", lambda: worker.heartbeat(drivers.lost), sleep=self.clock.sleep,
            ), name="heartbeat")
            requests = asyncio.create_task(supervise(
                "requests", lambda: self._serve_requests(services, drivers),
                sleep=self.clock.sleep,
            ), name="requests")
            with self._signals():
                try:
                    return await body(services, drivers), api.reachability
                finally:
                    requests.cancel()
                    await asyncio.gather(requests, return_exceptions=True)
                    await self._stop_work(ctx, drivers, monitor)
                    heartbeat.cancel()
                    await asyncio.gather(heartbeat, return_exceptions=True)

    async def _stop_work(
        self, ctx: StageContext, drivers: Drivers, monitor: asyncio.Task[None]
    ) -> None:
        """Stop as arq's worker does: no new step or paid call starts, the drivers are
        cancelled (a paid call in flight is shielded: it lands and is recorded), what is
        in flight gets a bounded grace period, then the rest is cut."""
        ctx.stopping.set()
        await drivers.cancel_all()
        left = await ctx.inflight.drain(self.settings.stop_grace_seconds)
        if left:
            log.warning("run.paid_calls_cut", count=left,
                        hint="their outcome is checked on the next pass")
            await ctx.inflight.cut()
        monitor.cancel()
        await asyncio.gather(monitor, return_exceptions=True)
        drivers.raise_credentials()

    async def _serve_requests(self, services: Services, drivers: Drivers) -> None:
        """Act on people's requests (cancel, retry, regenerate) while the pass runs, within
        a poll interval. A cancel first stops the subject's driver and lets its paid calls
        in flight land, so what was paid is recorded before the subject is canceled."""
        ctx = services.ctx
        while True:
            for request in ctx.store.open_requests(self.job.job.name):
                subject = ctx.store.latest(self.job.job.name, request.subject)
                if not drivers.worker.may_serve(subject):
                    continue  # the worker that drives it acts on it
                if request.action == "cancel":
                    await drivers.stop(subject, hold=True)  # not restarted meanwhile
                    await ctx.inflight.drain(self.settings.stop_grace_seconds)
                try:
                    outcome = act(ctx.store, self.job, request, now=self.clock.now())
                except StateConflict as exc:
                    outcome = str(exc)
                finally:
                    drivers.release(subject)
                ctx.store.finish_request(request.id, now=self.clock.now(), outcome=outcome)
                log.info("request.done", action=request.action, subject=request.subject,
                         outcome=outcome)
                drivers.start_all(services)
            await self.clock.sleep(self.settings.poll_interval_min)

    async def _round(self, services: Services, drivers: Drivers) -> IntakeResult:
        """One round of ``watch``: intake, then start what is to be driven. A step the state
        database fails (PostgreSQL restarting, a network cut) is logged and the next round
        tries again: the drivers and their paid calls in flight go on meanwhile."""
        try:
            taken = await self._intake(services, drivers)
            if not self._stop.is_set():
                drivers.start_all(services)
        except StateUnreachable as exc:
            log.warning("round.failed", error=str(exc), hint="the next round tries again")
            return IntakeResult()
        return taken

    async def _intake(self, services: Services, drivers: Drivers) -> IntakeResult:
        """Intake with its reading off the event loop: a signal stops it (see
        :func:`~.stages.intake.intake_off_loop`). Each new version's driver starts as soon
        as its folder is recorded, while the others are still being read. With several
        workers, one at a time does it: the one holding the intake role."""
        worker = self._worker
        if worker.shared:
            if not worker.take_role(INTAKE):
                return IntakeResult()
            clean_partials(self._job_root, older_than=PARTIALS_ABANDONED_AFTER)
        taken = await intake_off_loop(
            self.job, services.ctx.store, self.clock, stopping=self._stop,
            on_version=lambda row: drivers.start(services, row), cache=self._photo_cache,
        )
        # Keyed by the kind of wait ("settling", the marker...), not its wording, which
        # counts the seconds: a folder is logged when it starts waiting, not at each look.
        waiting = {(f.name, f.reason.split(":", 1)[0]): f.reason for f in taken.waiting}
        for key in sorted(waiting.keys() - self._waiting_logged):
            log.info("inbox.waiting", subject=key[0], reason=waiting[key])
        self._waiting_logged = frozenset(waiting)
        return taken

    def _rescan_delay(self, taken: IntakeResult) -> float:
        # With several workers a round also claims the subjects the worker doing intake
        # recorded and those a dead worker left: every few seconds, and within a lease.
        longest = RESCAN_SECONDS
        if self._worker.shared:
            longest = min(SHARED_ROUND_SECONDS, self.settings.lease_seconds / 3)
        if taken.waiting:
            return max(1.0, min(longest, self.job.job.settle_seconds / 2 or 1.0))
        return longest

    async def _watch_inbox(self, changed: asyncio.Event) -> None:
        async for names in watch_inbox(self.job.job.inbox, stop_event=self._stop,
                                       job_file=self.job.path):
            log.debug("inbox.changed", subjects=sorted(names))
            changed.set()

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if not self._handle_signals:
            yield
            return
        loop = asyncio.get_running_loop()
        before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        for signum in before:
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            yield
        finally:
            for signum, handler in before.items():
                loop.remove_signal_handler(signum)
                if handler is not None:
                    signal.signal(signum, handler)  # back to the command's own handling

    def _on_signal(self, signum: int) -> None:
        log.warning("run.stopping", signal=signal.Signals(signum).name)
        self.stop(signum)
