"""The Prometheus view of a watched job: ``lora-pipeline watch JOB --metrics-port 9464``.

    async with MetricsServer(job, settings, host="127.0.0.1", port=9464) as metrics:
        await Runner(job, settings, on_round=metrics.round_done).watch()

``GET /metrics`` answers in the text exposition format, from a registry of its own (never
the process-wide default). Every scrape reads the job's store afresh through a read-only
connection (WAL lets it read while the watch writes), in one worker thread that alone
opens and uses it, so the event loop running the stages never waits on a scrape.

The metrics (labels are the job and a bounded set of values only: never a subject's or a
file's name, which would make one series per folder, nor anything the service sent):

    lora_pipeline_subjects{job,state}                    subjects (current versions) per state
    lora_pipeline_trainings_in_flight{job}               trainings asked for, not yet finished
    lora_pipeline_paid_requests_total{job,endpoint,kind} paid creates the ledger counts as spent
    lora_pipeline_paid_units_total{job,endpoint,kind}    their units: trainings, or images
    lora_pipeline_last_round_end_timestamp_seconds{job}  when the watch last took in the inbox
    lora_pipeline_exit_code{job}                         the code the watch would exit with now
    lora_pipeline_spend_ceiling_reached{job}             1 once the ceiling held a request back
    lora_pipeline_api_retries_total{job,reason}          tries the API client sent again
    lora_pipeline_api_rate_limited_total{job}            429 answers the service sent
    lora_pipeline_rate_limit_waits_total{job,source}     waits for a rate limit
    lora_pipeline_rate_limit_wait_seconds_total{job,source}  their seconds

``kind`` is a training's kind (``subject``, ``style``) and empty for generations.
``reason`` is one of :data:`~pipeline.api.stats.RETRY_REASONS`. ``source`` is ``service``
(the client waiting out a 429 before trying again) or ``limiter`` (a generation held by the
pipeline's own images-per-minute limiter). The client's counts come with the round hook
(``Reachability.stats``), the limiters' from :data:`~pipeline.engine.ratelimit.LIMITER_STATS`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..api.client import Reachability
from ..api.stats import RETRY_REASONS, ApiStats
from ..clock import Clock, SystemClock
from ..config import Settings
from ..engine.ratelimit import LIMITER_STATS
from ..errors import ConfigError
from ..jobfile.loading import JobConfig
from ..store.location import reader_once_made
from ..store.queries import SqlStore
from ..store.states import SUBJECT_STATES, SUBMITTING, TRAINING
from .summary import Summaries, exit_code_for

log = structlog.get_logger(__name__)

DEFAULT_HOST = "127.0.0.1"
PREFIX = "lora_pipeline"
#: A training is in flight from the intent to send it until the service's verdict.
IN_FLIGHT_STATES = (SUBMITTING, TRAINING)


@dataclass(frozen=True)
class Round:
    """The end of one round of the watch loop: the inbox taken in, the drivers started."""

    ended_at: float
    ceiling_reached: bool
    #: The API client's counts, kept up to date by it: read at each scrape.
    reachability: Reachability | None = None


class JobCollector(Collector):
    """Reads one job's store at each scrape. Used from one thread only (see the module doc)."""

    def __init__(self, job: JobConfig, settings: Settings, *, since: float) -> None:
        self._job = job
        self._settings = settings
        self._since = since
        self._store: SqlStore | None = None
        self._summaries = Summaries(job.job.name)
        #: Written on the event loop, read here: one reference swapped whole.
        self.last_round: Round | None = None

    def collect(self) -> Iterator[Metric]:
        name = self._job.job.name
        store = self._reader()
        rows = store.subjects(name) if store is not None else []
        by_state = Counter(row.state for row in rows)
        subjects = GaugeMetricFamily(f"{PREFIX}_subjects",
                                     "Subjects (current versions) per state.",
                                     labels=["job", "state"])
        for state in SUBJECT_STATES:
            subjects.add_metric([name, state], by_state[state])
        yield subjects
        yield _gauge("trainings_in_flight",
                     "Trainings asked for and not yet finished (submitting or training).",
                     name, sum(by_state[state] for state in IN_FLIGHT_STATES))
        yield from self._paid(store)
        last = self.last_round
        yield from self._waits(last.reachability if last is not None else None)
        if last is not None:
            yield _gauge("last_round_end_timestamp_seconds",
                         "When the watch last finished taking in the inbox (Unix time).",
                         name, last.ended_at)
            yield _gauge("spend_ceiling_reached",
                         "1 once the spend ceiling kept a paid request from being sent.",
                         name, int(last.ceiling_reached))
        if store is not None:
            code = exit_code_for(self._summaries(store), since=self._since,
                                 ceiling_reached=last is not None and last.ceiling_reached,
                                 unreachable=last is not None and last.reachability is not None
                                 and last.reachability.unreachable)
            yield _gauge("exit_code", "The exit code the watch would exit with if stopped now.",
                         name, code)

    def _paid(self, store: SqlStore | None) -> Iterator[Metric]:
        name = self._job.job.name
        labels = ["job", "endpoint", "kind"]
        requests = CounterMetricFamily(f"{PREFIX}_paid_requests",
                                       "Paid create requests the ledger counts as spent.",
                                       labels=labels)
        units = CounterMetricFamily(f"{PREFIX}_paid_units",
                                    "Units of those requests: trainings, or images.",
                                    labels=labels)
        counts: Counter[tuple[str, str]] = Counter()
        sums: Counter[tuple[str, str]] = Counter()
        for entry in store.ledger(name) if store is not None else []:
            if entry.counted:
                key = (entry.endpoint, entry.kind or "")
                counts[key] += 1
                sums[key] += entry.units
        for (endpoint, kind), count in sorted(counts.items()):
            requests.add_metric([name, endpoint, kind], count)
            units.add_metric([name, endpoint, kind], sums[(endpoint, kind)])
        yield requests
        yield units

    def _waits(self, reachability: Reachability | None) -> Iterator[Metric]:
        """The API client's retries and both kinds of rate-limit waits (zero before the
        first round)."""
        name = self._job.job.name
        stats = reachability.stats if reachability is not None else ApiStats()
        retries = CounterMetricFamily(f"{PREFIX}_api_retries",
                                      "Tries the API client sent again, by what failed.",
                                      labels=["job", "reason"])
        for reason in RETRY_REASONS:
            retries.add_metric([name, reason], stats.retries[reason])
        yield retries
        limited = CounterMetricFamily(f"{PREFIX}_api_rate_limited",
                                      "429 answers the service sent.", labels=["job"])
        limited.add_metric([name], stats.rate_limited)
        yield limited
        labels = ["job", "source"]
        waits = CounterMetricFamily(f"{PREFIX}_rate_limit_waits",
                                    "Waits for a rate limit: the client's after a 429 "
                                    "(service), the images-per-minute limiter's (limiter).",
                                    labels=labels)
        seconds = CounterMetricFamily(f"{PREFIX}_rate_limit_wait_seconds",
                                      "Seconds of those waits.", labels=labels)
        limiter = LIMITER_STATS
        for source, count, waited in (
            ("service", stats.rate_limit_waits, stats.rate_limit_wait_seconds),
            ("limiter", limiter.waits, limiter.wait_seconds),
        ):
            waits.add_metric([name, source], count)
            seconds.add_metric([name, source], waited)
        yield waits
        yield seconds

    def _reader(self) -> SqlStore | None:
        """The read-only store, once the watch has made (or upgraded) it."""
        if self._store is None:
            self._store = reader_once_made(self._job, self._settings)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def _gauge(suffix: str, text: str, job: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(f"{PREFIX}_{suffix}", text, labels=["job"])
    gauge.add_metric([job], value)
    return gauge


class MetricsServer:
    """Serves ``/metrics`` on the running event loop for as long as the ``async with``."""

    def __init__(
        self, job: JobConfig, settings: Settings, *, port: int, host: str = DEFAULT_HOST,
        clock: Clock | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._reads = ThreadPoolExecutor(1, thread_name_prefix="metrics")
        self._collector = JobCollector(job, settings, since=(clock or SystemClock()).now())
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._collector)
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)

    def round_done(
        self, ended_at: float, ceiling_reached: bool, reachability: Reachability
    ) -> None:
        """The runner's hook at the end of each round of the watch loop."""
        self._collector.last_round = Round(ended_at, ceiling_reached, reachability)

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose when asked for port 0)."""
        for address in self._runner.addresses:
            return int(address[1])
        raise RuntimeError("the metrics server is not listening")

    async def _metrics(self, _request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(self._reads, generate_latest, self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def __aenter__(self) -> Self:
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, self._port).start()
        except OSError as exc:
            await self._runner.cleanup()
            self._reads.shutdown(wait=False)
            raise ConfigError(
                f"metrics: cannot listen on {self._host}:{self._port} ({exc.strerror or exc})"
            ) from exc
        log.info("metrics.serving", host=self._host, port=self.port)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._runner.cleanup()
            await asyncio.get_running_loop().run_in_executor(self._reads, self._collector.close)
        finally:
            self._reads.shutdown(wait=False)
