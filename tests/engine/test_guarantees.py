"""The engine's promises about money and stopping, each against the emulator: a paid call
that was sent lands and is recorded whatever stops the pass, one prompt never cancels
another, an unknown outcome is never a failure, long-lived tasks outlive their errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pipeline.api import ApiClient
from pipeline.cli.samples import create_samples
from pipeline.emulator import EmulatorHandle
from pipeline.engine.runner import Runner
from pipeline.engine.stages.monitor import TrainingMonitor
from pipeline.errors import BadCredentials, TransientApiError
from pipeline.jobfile.loading import load_job
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import DONE, GEN_DONE, GEN_FAILED, GEN_SUBMITTED, TRAINING
from tests.conftest import fast_settings, write_job


def _job(tmp_path: Path, *, prompts: int = 2, extra: str = "") -> Any:
    job_file = write_job(tmp_path, prompts=prompts, extra=extra)
    create_samples(tmp_path / "inbox", count=1, images_per_subject=2, include_bad=False)
    return load_job(job_file)


async def _run(job: Any, emulator: EmulatorHandle, tmp_path: Path, *, max_wait: float = 20,
               **settings: Any) -> Any:
    config = fast_settings(emulator.base_url, tmp_path / "state", **settings)
    return await Runner(job, config).run_once(max_wait=max_wait)


def _generations(tmp_path: Path) -> list[Any]:
    with SqliteStore(tmp_path / "state" / "state.db") as store:
        return store.generations(store.subjects("test")[0].id)


def _created(emulator: EmulatorHandle) -> int:
    return int(emulator.emulator.counters_snapshot()["generations_created"]["total"])


async def test_a_create_in_flight_when_the_pass_stops_lands_and_is_never_paid_again(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--max-wait ends the pass while the service's answer to a txt2img POST is on its way:
    the answer is still recorded, and the next pass pays for nothing again."""
    job = _job(tmp_path, prompts=1)
    real = ApiClient.txt2img
    answered = asyncio.Event()

    async def slow_answer(client: ApiClient, *args: Any, **kwargs: Any) -> str:
        task_id = await real(client, *args, **kwargs)  # the service has created the task
        await asyncio.sleep(0.3)  # ... and the answer arrives after the pass was stopped
        answered.set()
        return task_id

    monkeypatch.setattr(ApiClient, "txt2img", slow_answer)

    async def stop_when_sent(runner: Runner) -> None:
        while _created(emulator) == 0:
            await asyncio.sleep(0.01)
        runner.stop()

    config = fast_settings(emulator.base_url, tmp_path / "state")
    runner = Runner(job, config)
    stopper = asyncio.create_task(stop_when_sent(runner))
    await runner.run_once(max_wait=20)
    await stopper
    assert answered.is_set()
    [generation] = _generations(tmp_path)
    assert generation.state == GEN_SUBMITTED and generation.task_id  # recorded, not lost
    monkeypatch.setattr(ApiClient, "txt2img", real)
    result = await _run(job, emulator, tmp_path)
    assert result.subjects[0].state == DONE
    assert _created(emulator) == 1


async def test_one_prompts_failure_never_cancels_anothers_paid_call(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prompt 1's result poll breaks while prompt 2's POST waits for its answer: prompt 2
    is still recorded, and nothing is sent twice."""
    job = _job(tmp_path, prompts=2)
    real_create, real_result = ApiClient.txt2img, ApiClient.task_result
    first_task: list[str] = []

    async def create(client: ApiClient, request: Any, extra: Any = None) -> str:
        task_id = await real_create(client, request, extra)
        if "take 2" in request.prompt:
            await asyncio.sleep(0.3)  # its answer is slow; prompt 1 breaks meanwhile
        else:
            first_task.append(task_id)
        return task_id

    async def result(client: ApiClient, task_id: str) -> Any:
        if task_id in first_task:
            raise RuntimeError("a bug in prompt 1's polling")
        return await real_result(client, task_id)

    monkeypatch.setattr(ApiClient, "txt2img", create)
    monkeypatch.setattr(ApiClient, "task_result", result)
    await _run(job, emulator, tmp_path, max_wait=5)
    states = {g.prompt_index: g for g in _generations(tmp_path)}
    assert states[2].state == GEN_DONE and states[2].task_id
    assert states[1].state == GEN_SUBMITTED and "a bug" in (states[1].error or "")
    monkeypatch.setattr(ApiClient, "task_result", real_result)
    monkeypatch.setattr(ApiClient, "txt2img", real_create)
    again = await _run(job, emulator, tmp_path)
    assert again.subjects[0].state == DONE and _created(emulator) == 2


@pytest.mark.parametrize("emulator_config", [{"fault_5xx": 1.0,
                                               "fault_routes": ["/v3/async/txt2img"]}],
                         indirect=True)
async def test_5xx_answers_to_a_create_are_sent_again_a_bounded_number_of_times(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    """A 502/503/504 (or a 500 not saying the task was not created) leaves the outcome
    unknown: the create is sent again at most MAX_UNCERTAIN_RESENDS times, then the prompt
    fails with a reason, never an endless stream of paid requests."""
    job = _job(tmp_path, prompts=1)
    result = await _run(job, emulator, tmp_path)
    [generation] = _generations(tmp_path)
    assert generation.state == GEN_FAILED and "`retry` asks again" in (generation.error or "")
    posts = emulator.emulator.counters_snapshot()["requests"]["POST /v3/async/txt2img"]
    assert posts <= 5 + 3  # its tries, and at most 3 re-sends of an unknown outcome
    assert result.subjects[0].state == DONE and "1 of 1 prompts failed" in result.subjects[0].error


async def test_a_generation_that_never_settles_fails_at_its_deadline(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    emulator.emulator.config.generation_queue_seconds = 10_000
    job = _job(tmp_path, prompts=1)
    result = await _run(job, emulator, tmp_path, generation_deadline=0.3)
    [generation] = _generations(tmp_path)
    assert generation.state == GEN_FAILED and "no result 0 s after it was sent" in (
        generation.error or "")
    assert result.subjects[0].state == DONE


async def test_a_404_on_a_known_training_is_never_trained_again(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service forgetting a training it took is "unknown": noted on the subject, and
    never turned into a FAILED that max_training_retries would pay for again."""
    job = _job(tmp_path, prompts=1, extra="max_training_retries = 2")

    async def no_list(*args: Any, **kwargs: Any) -> Any:
        return
        yield  # an empty task list: the monitor asks for the task by id

    async def forgotten(client: ApiClient, kind: str, task_id: str) -> Any:
        from pipeline.errors import NotFound

        raise NotFound(404, "TASK_NOT_FOUND", "no such task", "/v3/training/subject")

    monkeypatch.setattr(ApiClient, "iter_training_tasks", no_list)
    monkeypatch.setattr(ApiClient, "training_status", forgotten)
    result = await _run(job, emulator, tmp_path, max_wait=1.5, training_deadline=0.5)
    subject = result.subjects[0]
    assert subject.state == "failed" and "no result" in (subject.error or "")
    assert emulator.emulator.counters_snapshot()["trainings_created"]["total"] == 1


async def test_the_monitor_is_restarted_after_an_unexpected_error(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the poller ends one cycle (logged), never the poller: trainings settle."""
    job = _job(tmp_path, prompts=1)
    real = TrainingMonitor.poll_once
    broken = iter([True, True])

    async def flaky(self: TrainingMonitor) -> bool:
        if next(broken, False):
            raise RuntimeError("a bug in the monitor")
        return await real(self)

    monkeypatch.setattr(TrainingMonitor, "poll_once", flaky)
    result = await _run(job, emulator, tmp_path)
    assert result.subjects[0].state == DONE


async def test_watch_with_a_refused_key_ends_at_once_with_bad_credentials(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    job = _job(tmp_path, prompts=1)
    config = fast_settings(emulator.base_url, tmp_path / "state", api_key="sk-not-the-right-key")
    with pytest.raises(BadCredentials):
        await asyncio.wait_for(Runner(job, config).watch(), timeout=10)
    requests = sum(emulator.emulator.counters_snapshot()["requests"].values())
    assert requests <= 3


async def test_an_unreadable_create_answer_is_reconciled_by_name(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 200 whose body does not parse may hide a created training: it is found by name
    and followed; `retry` is never needed, and nothing is paid twice."""
    job = _job(tmp_path, prompts=1)
    real = ApiClient.create_training

    async def garbled(client: ApiClient, kind: Any, request: Any) -> str:
        await real(client, kind, request)
        raise TransientApiError(200, "BAD_RESPONSE", "the answer is not JSON", "/v3/training")

    monkeypatch.setattr(ApiClient, "create_training", garbled)
    result = await _run(job, emulator, tmp_path)
    assert result.subjects[0].state == DONE
    assert emulator.emulator.counters_snapshot()["trainings_created"]["total"] == 1
    assert TRAINING  # the subject went through training under the reconciled task id


async def test_a_create_left_submitting_by_a_crash_is_sent_again_at_most_the_limit(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found `submitting` (a crash cut its POST), then only unclear answers: the prompt is
    sent MAX_UNCERTAIN_RESENDS times in all, then fails with a reason."""
    from pipeline.engine.stages.generate import MAX_UNCERTAIN_RESENDS
    from tests.conftest import force_generation_state

    job = _job(tmp_path, prompts=1)
    await _run(job, emulator, tmp_path)
    with SqliteStore(tmp_path / "state" / "state.db") as store:
        subject = store.subjects("test")[0]
        [generation] = store.generations(subject.id)
        force_generation_state(store, generation.id, now=0, state="submitting", task_id=None)
        store._db.execute("UPDATE subjects SET state = 'generating' WHERE id = ?", (subject.id,))
    sent: list[int] = []

    async def unclear(client: ApiClient, request: Any, extra: Any = None) -> str:
        sent.append(1)
        raise TransientApiError(502, "BAD_GATEWAY", "no answer", "/v3/async/txt2img")

    monkeypatch.setattr(ApiClient, "txt2img", unclear)
    await _run(job, emulator, tmp_path)
    [generation] = _generations(tmp_path)
    assert len(sent) == MAX_UNCERTAIN_RESENDS
    assert generation.state == GEN_FAILED and "no clear answer" in (generation.error or "")
