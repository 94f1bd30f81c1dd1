"""One subject's way through the stages, from wherever its state says it stands.

``drive`` is a loop over the subject's state: each turn hands it to the stage that owns
that state and records what came back. It never does a stage's work itself, so it holds
no I/O of its own; the runner starts one ``drive`` per subject and they run concurrently.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import structlog

from ..errors import (
    ApiError,
    BadCredentials,
    BadResponse,
    DatasetError,
    IntegrityError,
    PipelineError,
    UnsafePath,
)
from ..store.postgres import PostgresStore
from ..store.protocol import SubjectRow
from ..store.states import (
    DONE,
    FAILED,
    GEN_DONE,
    GEN_FAILED,
    GEN_PENDING,
    GEN_SUBMITTED,
    GEN_SUBMITTING,
    GENERATING,
    SUBMITTING,
    TRAINED,
    TRAINING,
    UPLOADED,
    UPLOADING,
    VALIDATED,
)
from .ratelimit import GenerationLimits, ImageRateLimiter
from .shared_limits import shared_limits
from .shared_monitor import SharedMonitor
from .stages.collect import collect_generation
from .stages.context import StageContext
from .stages.fetch import ModelIndex, fetch_lora
from .stages.generate import init_uses, submit_generation
from .stages.monitor import TrainingMonitor
from .stages.train import TaskIndex, submit_training
from .stages.upload import upload_subject
from .work_share import SharedWorker, SoleWorker

log = structlog.get_logger(__name__)


@dataclass
class Services:
    """What the drivers of one run share: limits, the poller and the look-up caches."""

    ctx: StageContext
    monitor: TrainingMonitor | SharedMonitor
    upload_limit: asyncio.Semaphore
    download_limit: asyncio.Semaphore
    #: The account's txt2img and img2img images-per-minute limits, each shared by all.
    generation_limits: GenerationLimits
    tasks: TaskIndex
    models: ModelIndex

    @property
    def stopping(self) -> asyncio.Event:
        """Set when the pass stops: no new step, and no new paid call, starts after it."""
        return self.ctx.stopping

    @classmethod
    def create(cls, ctx: StageContext, worker: SoleWorker | None = None) -> Services:
        """The services of one pass; a :class:`SharedWorker` (PostgreSQL) gets the job's
        one poller and the account's limits shared with the other workers."""
        settings = ctx.settings
        monitor: TrainingMonitor | SharedMonitor
        if isinstance(worker, SharedWorker) and isinstance(ctx.store, PostgresStore):
            monitor = SharedMonitor(ctx, worker)
            limits = shared_limits(ctx.store, settings, ctx.clock)
        else:
            monitor = TrainingMonitor(ctx)
            limits = GenerationLimits(
                txt2img=ImageRateLimiter(settings.images_per_minute, ctx.clock),
                img2img=ImageRateLimiter(settings.img2img_images_per_minute, ctx.clock),
            )
        return cls(
            ctx=ctx,
            monitor=monitor,
            upload_limit=asyncio.Semaphore(settings.upload_concurrency),
            download_limit=asyncio.Semaphore(settings.download_concurrency),
            generation_limits=limits,
            tasks=TaskIndex(ctx),
            models=ModelIndex(ctx),
        )


async def drive(services: Services, subject: SubjectRow) -> SubjectRow:
    """Advance ``subject`` until it settles, stalls or the run is stopping.

    Failures of this subject are recorded on it and do not escape; bad credentials do,
    since nothing else can succeed either.
    """
    store, clock = services.ctx.store, services.ctx.clock
    while not services.stopping.is_set():
        subject = store.subject(subject.id)
        if subject.superseded:
            return subject
        try:
            advanced = await _step(services, subject)
        except BadCredentials:
            raise
        except (DatasetError, ApiError, PipelineError) as exc:
            log.warning(
                "subject.stalled", subject=subject.name, state=subject.state, error=str(exc)
            )
            return store.update_subject(subject.id, now=clock.now(), error=str(exc))
        except Exception as exc:  # a bug must not take the other subjects down with it
            log.exception("subject.crashed", subject=subject.name, state=subject.state)
            return store.update_subject(
                subject.id, now=clock.now(), error=f"internal error: {exc!r} (see the log)"
            )
        if advanced is None:
            return store.subject(subject.id)
    return store.subject(subject.id)


async def _step(services: Services, subject: SubjectRow) -> SubjectRow | None:
    """Run the stage that owns the subject's state; None once there is nothing left to do."""
    ctx = services.ctx
    state = subject.state
    if state in (VALIDATED, UPLOADING):
        return await upload_subject(ctx, subject, services.upload_limit)
    if state in (UPLOADED, SUBMITTING):
        return await submit_training(ctx, subject, services.tasks)
    if state == TRAINING:
        return await services.monitor.wait(subject)
    if state == TRAINED:
        return await _start_generating(services, subject)
    if state == GENERATING:
        return await _generate_all(services, subject)
    if state == FAILED and _may_retrain(services, subject):
        log.info("train.retrying", subject=subject.name, attempt=subject.attempts + 1)
        return ctx.store.transition(
            subject.id, expected=FAILED, to=UPLOADED, now=ctx.clock.now(), task_id=None,
            task_status=None,
            submitted_at=None, trained_at=None, error=None, progress=None, eta=None,
        )
    return None


def _may_retrain(services: Services, subject: SubjectRow) -> bool:
    """A training the service reported FAILED is tried again, up to the job's limit."""
    limit = services.ctx.job.job.max_training_retries
    return subject.task_status == "FAILED" and subject.attempts <= limit


async def _start_generating(services: Services, subject: SubjectRow) -> SubjectRow:
    ctx = services.ctx
    if ctx.job.job.fetch_lora and not subject.lora_path:
        try:
            subject = await fetch_lora(ctx, subject, services.models, services.download_limit)
        except (BadResponse, IntegrityError, UnsafePath) as exc:
            if isinstance(exc, BadResponse) and exc.transient:
                raise  # the next pass tries the download again
            # The LoRA stays usable on the service: its pictures are still made.
            note = f"the trained LoRA file could not be saved: {exc}"
            log.warning("fetch.refused", subject=subject.name, error=str(exc))
            subject = ctx.store.update_subject(
                subject.id, now=ctx.clock.now(),
                warnings=json.dumps([*subject.warning_list, note]),
            )
    prompts = ctx.subject_settings(subject).prompts
    ctx.store.ensure_generations(
        subject.id, [(p.index, p.slug, p.text) for p in prompts], now=ctx.clock.now(),
        img2img=init_uses(prompts),
    )
    return ctx.store.transition(subject.id, expected=TRAINED, to=GENERATING, now=ctx.clock.now())


async def _generate_all(services: Services, subject: SubjectRow) -> SubjectRow | None:
    """Every prompt on its own: one prompt's failure never cancels another's. The subject
    is done once every prompt settled; else it waits for the next pass (None)."""
    ctx = services.ctx
    outcomes = await asyncio.gather(
        *(_one_prompt(services, subject, generation.id)
          for generation in ctx.store.generations(subject.id)),
        return_exceptions=True,
    )
    for outcome in outcomes:
        if isinstance(outcome, BadCredentials | asyncio.CancelledError):
            raise outcome
    generations = ctx.store.generations(subject.id)
    waiting = [g for g in generations if g.state not in (GEN_DONE, GEN_FAILED)]
    if waiting:
        stalled: dict[str, list[str]] = {}  # one reason (the spend ceiling's...), its prompts
        for g in waiting:
            if g.error:
                stalled.setdefault(g.error, []).append(g.slug)
        if stalled and not ctx.stopping.is_set():
            count = sum(len(slugs) for slugs in stalled.values())
            ctx.store.update_subject(subject.id, now=ctx.clock.now(), error=(
                f"{count} of {len(generations)} prompts wait for the next pass: "
                + "; ".join(f"{', '.join(slugs)}: {why}" for why, slugs in stalled.items())))
        return None
    failed = [g for g in generations if g.state == GEN_FAILED]
    error = None
    if failed:
        error = f"{len(failed)} of {len(generations)} prompts failed: " + "; ".join(
            f"{g.slug}: {g.error}" for g in failed
        )
    return ctx.store.transition(
        subject.id, expected=GENERATING, to=DONE, now=ctx.clock.now(), finished_at=ctx.clock.now(),
        error=error,
    )


async def _one_prompt(services: Services, subject: SubjectRow, generation_id: int) -> None:
    """Advance one prompt until it settles or the pass stops; a failure that is not final
    is noted on the prompt, which the next pass takes up again."""
    ctx = services.ctx
    while not services.stopping.is_set():
        generation = next(g for g in ctx.store.generations(subject.id) if g.id == generation_id)
        if generation.state in (GEN_DONE, GEN_FAILED):
            return
        try:
            if generation.state in (GEN_PENDING, GEN_SUBMITTING):
                limiter = services.generation_limits.of(generation.endpoint)
                await submit_generation(ctx, subject, generation, limiter)
            elif generation.state == GEN_SUBMITTED:
                await collect_generation(ctx, subject, generation, services.download_limit)
        except BadCredentials:
            raise
        except Exception as exc:
            if not isinstance(exc, PipelineError):
                log.exception("prompt.crashed", subject=subject.name, prompt=generation.slug)
            log.warning("prompt.stalled", subject=subject.name, prompt=generation.slug,
                        error=str(exc))
            ctx.store.update_generation(generation_id, now=ctx.clock.now(), error=str(exc))
            return
