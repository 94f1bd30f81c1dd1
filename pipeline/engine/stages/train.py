"""Train: one paid training per subject version, and never a second one by accident.

The intent (state ``submitting`` and the deterministic training name) is written before
the create POST, with its ledger row in the same transaction (the job's spend ceiling is
checked there: a training that would pass it is not sent, and the subject stays
``uploaded``). A subject found in ``submitting`` (a crash, a lost answer) is looked up by
name in the task list, every page, before anything is sent again. The create itself is
re-sent only when the server certainly did not take it (429) or the task list shows it
did not; each re-send is a ledger row of its own, and the row of the request the task list
proved absent stops counting.
"""

from __future__ import annotations

import hashlib
import re

import structlog

from ...api.models import (
    DatasetItem,
    ExpertSetting,
    TrainingComponent,
    TrainingKind,
    TrainingRequest,
    TrainingTask,
)
from ...api.retry import backoff_delay, retry_after_of
from ...errors import ApiError, BadCredentials, BadResponse, RateLimited, StateConflict
from ...jobfile.loading import SubjectSettings
from ...store.ledger import CREATED, NOT_CREATED
from ...store.protocol import ImageRow, SubjectRow
from ...store.states import FAILED, SUBMITTING, TRAINING, UPLOADED
from .context import StageContext

log = structlog.get_logger(__name__)

#: How many times an uncertain create is checked against the task list and sent again.
MAX_CREATE_TRIES = 4
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def training_name(job: str, subject: SubjectRow, attempt: int) -> str:
    """Deterministic name of a subject version's training: job, subject, dataset, attempt."""
    slug = _UNSAFE.sub("-", subject.name).strip("-")[:40] or "subject"
    digest = hashlib.sha256(f"{job}\0{subject.name}\0{subject.fingerprint}".encode()).hexdigest()
    name = f"{job}-{slug}-{digest[:12]}"
    return name if attempt <= 1 else f"{name}-r{attempt}"


def build_request(
    name: str, images: list[ImageRow], settings: SubjectSettings
) -> TrainingRequest:
    training = settings.training
    items = [DatasetItem(assets_id=str(image.assets_id), caption=image.caption) for image in images]
    return TrainingRequest(
        name=name,
        base_model=training.base_model,
        width=training.width,
        height=training.height,
        image_dataset_items=items,
        components=[TrainingComponent.model_validate(c.to_api()) for c in training.components],
        expert_setting=ExpertSetting.model_validate(training.expert_setting(settings.subject)),
    )


class TaskIndex:
    """The account's training tasks by name, read from the task list (every page)."""

    def __init__(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._by_name: dict[str, TrainingTask] | None = None

    async def find(self, name: str, *, refresh: bool = False) -> TrainingTask | None:
        if self._by_name is None or refresh:
            by_name: dict[str, TrainingTask] = {}
            mine = f"{self._ctx.job_name}-"  # other jobs' tasks are not kept
            async for task in self._ctx.api.iter_training_tasks():
                if task.task_name.startswith(mine):
                    by_name.setdefault(task.task_name, task)
            self._by_name = by_name
        return self._by_name.get(name)


async def submit_training(ctx: StageContext, subject: SubjectRow, index: TaskIndex) -> SubjectRow:
    """Take a subject from ``uploaded`` (or a leftover ``submitting``) to ``training``."""
    if subject.state == SUBMITTING and subject.training_name:
        found = await index.find(subject.training_name, refresh=True)
        if found is not None:
            log.info("train.reconciled", subject=subject.name, task_id=found.task_id)
            return _started(ctx, subject, found.task_id)
        name = subject.training_name
        resend = True  # its request was never answered: this one is sent again
    else:
        if ctx.stopping.is_set():
            return subject  # no new paid call once the pass is stopping
        if subject.training_name and subject.task_id is None:
            # An earlier attempt whose outcome was never known (canceled or crashed while
            # `submitting`, then retried): the service may hold it. Unless it ended FAILED
            # or CANCELED there, it is that training, not a new paid one.
            found = await index.find(subject.training_name, refresh=True)
            if found is not None and found.task_status not in ("FAILED", "CANCELED"):
                log.info("train.reconciled", subject=subject.name, task_id=found.task_id)
                return _started(ctx, subject, found.task_id)
        attempt = subject.attempts + 1
        name = training_name(ctx.job_name, subject, attempt)
        found = await index.find(name)
        if found is not None:  # a state file lost or reset: the service already has it
            return _started(ctx, subject, found.task_id)
        subject = ctx.store.transition(
            subject.id, expected=UPLOADED, to=SUBMITTING, now=ctx.clock.now(),
            charge=ctx.spend.training(subject, ctx.subject_settings(subject).training.kind),
            training_name=name, attempts=attempt,
        )
        resend = False
    return await _create(ctx, subject, name, index, resend=resend)


async def _create(
    ctx: StageContext, subject: SubjectRow, name: str, index: TaskIndex, *, resend: bool
) -> SubjectRow:
    """POST the create until it is answered, sending it again only as the module says.
    ``resend``: the request before this one was never answered (its intent and ledger row
    are older). Every POST but the first of a fresh intent writes a ledger row first."""
    settings = ctx.subject_settings(subject)
    request = build_request(name, ctx.store.images(subject.id), settings)
    kind: TrainingKind = settings.training.kind
    policy = ctx.api.retry_policy
    on_the_books = not resend
    for attempt in range(1, MAX_CREATE_TRIES + 1):
        if not on_the_books:
            ctx.store.update_subject(subject.id, now=ctx.clock.now(),
                                     charge=ctx.spend.training(subject, kind, resend=resend))
        on_the_books = False
        outcome = await ctx.inflight.land(_send(ctx, subject, kind, request))
        if isinstance(outcome, SubjectRow):
            return outcome
        log.warning("train.create_uncertain", subject=subject.name, error=str(outcome))
        await ctx.clock.sleep(backoff_delay(attempt, policy, retry_after=retry_after_of(outcome)))
        if not isinstance(outcome, RateLimited):
            found = await index.find(name, refresh=True)
            if found is not None:
                return _started(ctx, subject, found.task_id)
        if attempt == MAX_CREATE_TRIES or ctx.stopping.is_set():
            # The last answer may have been lost after the service took the training:
            # marking it failed would lose a paid task, and `retry` would pay again.
            # It stays `submitting`, so the next pass looks the name up first.
            raise outcome
        resend = not isinstance(outcome, RateLimited)
    raise AssertionError("unreachable")


async def _send(
    ctx: StageContext, subject: SubjectRow, kind: TrainingKind, request: TrainingRequest
) -> SubjectRow | ApiError:
    """The paid POST and the recording of what it told: the subject's new state, or the
    error of an answer that leaves the outcome unknown (to be reconciled by name)."""
    try:
        task_id = await ctx.api.create_training(kind, request)
    except BadCredentials:
        _settle(ctx, subject, NOT_CREATED)
        raise
    except ApiError as exc:
        if isinstance(exc, RateLimited):
            _settle(ctx, subject, NOT_CREATED)  # certainly not taken: sent again later
        if exc.transient or isinstance(exc, BadResponse):
            return exc
        _settle(ctx, subject, NOT_CREATED)
        return ctx.store.transition(
            subject.id, expected=SUBMITTING, to=FAILED, now=ctx.clock.now(),
            error=f"the service refused the training: {exc}",
        )
    log.info("train.submitted", subject=subject.name, task_id=task_id, name=request.name)
    ctx.counts["trainings_submitted"] += 1
    return _started(ctx, subject, task_id)


def _settle(ctx: StageContext, subject: SubjectRow, outcome: str) -> None:
    """What became of the subject's open training request(s) in the ledger."""
    ctx.store.settle_charge(subject.id, outcome=outcome, now=ctx.clock.now(), every_open=True)


def _started(ctx: StageContext, subject: SubjectRow, task_id: str) -> SubjectRow:
    now = ctx.clock.now()
    _settle(ctx, subject, CREATED)
    try:
        return ctx.store.transition(
            subject.id, expected=subject.state, to=TRAINING, now=now, task_id=task_id,
            task_status="QUEUING", submitted_at=subject.submitted_at or now, error=None,
        )
    except StateConflict:
        # A person moved it meanwhile (a cancel): theirs is the state, but the paid task's
        # id is kept, so nothing can pay for it again.
        log.warning("train.started_after_a_change", subject=subject.name, task_id=task_id)
        return ctx.store.update_subject(subject.id, now=now, task_id=task_id,
                                        submitted_at=subject.submitted_at or now)
