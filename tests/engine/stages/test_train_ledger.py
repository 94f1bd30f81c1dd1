"""Train and the ledger: each POST of a training create has its row before it goes out;
what the service certainly did not take stops counting; the ceiling keeps the subject
``uploaded``. The service is a stand-in that records each create and what the ledger held
when it came."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.api.models import TrainingTask
from pipeline.api.retry import RetryPolicy
from pipeline.engine.stages.context import StageContext
from pipeline.engine.stages.intake import intake
from pipeline.engine.stages.train import TaskIndex, submit_training
from pipeline.errors import (
    BadCredentials,
    PermanentApiError,
    RateLimited,
    SpendCeilingReached,
    TransientApiError,
)
from pipeline.jobfile.loading import load_job
from pipeline.store.ledger import CREATED, NOT_CREATED
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import FAILED, SUBMITTING, TRAINING, UPLOADED
from tests.conftest import RecordingClock, closed_after_test, fast_settings, force_state, write_job
from tests.engine.folders import write_photos

LOST = "lost"  # the service makes the training, and its answer is lost


class Service:
    def __init__(self, store: SqliteStore, answers: list[Any]) -> None:
        self.store, self.answers = store, answers
        self.tasks: list[TrainingTask] = []
        self.rows_at_each_post: list[int] = []
        self.retry_policy = RetryPolicy(base_delay=1.0, max_delay=4.0, jitter=0.0)

    async def create_training(self, kind: str, request: Any) -> str:
        self.rows_at_each_post.append(len(self.store.ledger("test")))
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        task = TrainingTask(task_name=request.name, task_id=f"t{len(self.tasks) + 1}",
                            task_status="QUEUING")
        self.tasks.append(task)
        if answer == LOST:
            raise TransientApiError(503, "SERVICE_UNAVAILABLE", "lost", "/v3/training")
        return task.task_id

    async def iter_training_tasks(self) -> AsyncIterator[TrainingTask]:
        for task in self.tasks:
            yield task


async def _train(tmp_path: Path, answers: list[Any], extra: str = "") -> tuple[Any, ...]:
    job = load_job(write_job(tmp_path, extra=extra))
    write_photos(tmp_path / "inbox" / "alice", 3)
    store = closed_after_test(SqliteStore(tmp_path / "state.db"))
    clock = RecordingClock()
    [row] = intake(job, store, clock).new_versions
    for image in store.images(row.id):
        store.set_image_asset(row.id, image.sha256, f"asset-{image.sha256[:6]}")
    force_state(store, row.id, now=clock.now(), state=UPLOADED)
    service = Service(store, answers)
    settings = fast_settings("http://127.0.0.1:9", tmp_path / "state")
    ctx = StageContext(job, settings, service, store, clock)  # type: ignore[arg-type]
    return ctx, store, service, store.subject(row.id)


def _rows(store: SqliteStore) -> list[tuple[str | None, int]]:
    return [(entry.outcome, entry.resend) for entry in store.ledger("test")]


async def test_the_row_is_written_before_the_post_and_settled_by_the_answer(
    tmp_path: Path,
) -> None:
    ctx, store, service, subject = await _train(tmp_path, [])
    subject = await submit_training(ctx, subject, TaskIndex(ctx))
    assert subject.state == TRAINING
    assert service.rows_at_each_post == [1]
    assert _rows(store) == [(CREATED, 0)]


async def test_a_429_stops_counting_and_the_retry_is_a_row_of_its_own(tmp_path: Path) -> None:
    ctx, store, service, subject = await _train(
        tmp_path, [RateLimited(429, "RATE_LIMIT", "slow down", "/v3/training")])
    subject = await submit_training(ctx, subject, TaskIndex(ctx))
    assert subject.state == TRAINING and service.rows_at_each_post == [1, 2]
    assert _rows(store) == [(NOT_CREATED, 0), (CREATED, 0)]
    assert store.spent("test").trainings == {"subject": 1}


async def test_a_lost_answer_found_by_name_is_the_same_paid_training(tmp_path: Path) -> None:
    ctx, store, service, subject = await _train(tmp_path, [LOST])
    subject = await submit_training(ctx, subject, TaskIndex(ctx))
    assert subject.state == TRAINING and len(service.tasks) == 1
    assert _rows(store) == [(CREATED, 0)]


async def test_a_request_the_task_list_does_not_hold_stops_counting_when_sent_again(
    tmp_path: Path,
) -> None:
    ctx, store, service, subject = await _train(
        tmp_path, [TransientApiError(502, "BAD_GATEWAY", "no answer", "/v3/training")])
    subject = await submit_training(ctx, subject, TaskIndex(ctx))
    assert subject.state == TRAINING and service.rows_at_each_post == [1, 2]
    assert _rows(store) == [(NOT_CREATED, 0), (CREATED, 1)]
    assert store.spent("test").trainings == {"subject": 1}


async def test_a_refusal_or_a_refused_key_made_nothing(tmp_path: Path) -> None:
    ctx, store, _, subject = await _train(
        tmp_path, [PermanentApiError(400, "INVALID", "bad base model", "/v3/training")])
    assert (await submit_training(ctx, subject, TaskIndex(ctx))).state == FAILED
    assert _rows(store) == [(NOT_CREATED, 0)]
    ctx, store, _, subject = await _train(
        tmp_path / "key", [BadCredentials(403, "INVALID_API_KEY", "no", "/v3/training")])
    with pytest.raises(BadCredentials):
        await submit_training(ctx, subject, TaskIndex(ctx))
    assert _rows(store) == [(NOT_CREATED, 0)]
    assert store.subject(subject.id).state == SUBMITTING


async def test_the_ceiling_sends_nothing_and_leaves_the_subject_uploaded(tmp_path: Path) -> None:
    ctx, store, service, subject = await _train(tmp_path, [],
                                                extra="\n[max_spend]\ntrainings = 0\n")
    with pytest.raises(SpendCeilingReached, match=r"max_spend\.trainings = 0"):
        await submit_training(ctx, subject, TaskIndex(ctx))
    assert service.rows_at_each_post == [] and store.ledger("test") == []
    after = store.subject(subject.id)
    assert (after.state, after.training_name, after.attempts) == (UPLOADED, None, 0)
    assert ctx.spend.stopped and "max_spend.trainings = 0" in ctx.spend.refusals[0]
