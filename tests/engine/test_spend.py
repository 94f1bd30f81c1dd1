"""The ledger and the spend ceiling, end to end against the emulator: every paid request is
on the books from its intent on (kills included), the ceiling stops exactly the request that
would pass it (subjects racing included), the pass says so with its exit code, and a
higher ceiling lets the next pass go on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.api import ApiClient
from pipeline.emulator import EmulatorHandle
from pipeline.engine.runner import Runner, RunResult
from pipeline.errors import TransientApiError
from pipeline.jobfile.loading import JobConfig, load_job
from pipeline.store.ledger import CREATED, NOT_CREATED, Tally
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import (
    DONE,
    GEN_DONE,
    GEN_PENDING,
    GEN_SUBMITTING,
    GENERATING,
    SUBMITTING,
    UPLOADED,
)
from pipeline.views.summary import EXIT_OK, EXIT_SPEND_CEILING
from tests.conftest import fast_settings, write_job
from tests.engine.folders import write_subjects


def _job(tmp_path: Path, ceiling: str = "", *, subjects: int = 1, prompts: int = 2,
         image_num: int = 1) -> JobConfig:
    job_file = write_job(tmp_path, prompts=prompts, image_num=image_num,
                         extra=f"\n{ceiling}\n" if ceiling else "")
    write_subjects(tmp_path / "inbox", subjects, 3)
    return load_job(job_file)


def _raise_ceiling(tmp_path: Path, old: str, new: str) -> JobConfig:
    job_file = tmp_path / "test.toml"
    job_file.write_text(job_file.read_text(encoding="utf-8").replace(old, new),
                        encoding="utf-8")
    return load_job(job_file)


async def _run(job: JobConfig, emulator: EmulatorHandle, tmp_path: Path) -> RunResult:
    config = fast_settings(emulator.base_url, tmp_path / "state")
    return await Runner(job, config).run_once(max_wait=20)


def _state(tmp_path: Path) -> SqliteStore:
    """The job's state as another process (the next pass, a person) would open it."""
    return SqliteStore(tmp_path / "state" / "state.db", read_only=True)


def _counters(emulator: EmulatorHandle) -> dict[str, Any]:
    return emulator.emulator.counters_snapshot()


async def test_every_paid_request_is_on_the_books_as_the_service_counts_it(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    job = _job(tmp_path, subjects=2, prompts=2, image_num=2)
    result = await _run(job, emulator, tmp_path)
    assert result.exit_code == EXIT_OK and result.ceiling == []
    counters = _counters(emulator)
    with _state(tmp_path) as store:
        entries = store.ledger("test")
        spent = store.spent("test")
    assert spent == Tally(trainings={"subject": 2}, images={"txt2img": 8})
    assert spent.training_count == counters["trainings_created"]["total"]
    assert spent.image_count == counters["images_requested"]
    assert {e.subject for e in entries} == {"alice", "bob"}
    assert all(e.outcome == CREATED and not e.resend for e in entries)
    assert len({e.pass_id for e in entries}) == 1
    again = await _run(job, emulator, tmp_path)
    with _state(tmp_path) as store:
        assert len(store.ledger("test")) == len(entries)  # nothing more paid
    assert again.exit_code == EXIT_OK


CEILING = "[max_spend]\ntrainings = 1\nimages = 3"


async def test_the_ceiling_stops_the_fourth_image_and_a_higher_one_lets_the_next_pass_go_on(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    job = _job(tmp_path, CEILING, prompts=4)
    result = await _run(job, emulator, tmp_path)
    assert result.exit_code == EXIT_SPEND_CEILING
    assert _counters(emulator)["generations_created"]["total"] == 3  # the 4th never sent
    [subject] = result.subjects
    assert subject.state == GENERATING
    assert subject.error is not None and "1 of 4 prompts wait for the next pass" in subject.error
    assert "spend ceiling reached (max_spend.images = 3)" in subject.error
    assert "test.toml and run again" in subject.error
    assert len(result.ceiling) == 1
    with _state(tmp_path) as store:
        assert store.spent("test") == Tally(trainings={"subject": 1}, images={"txt2img": 3})
        row = store.subjects("test")[0]
        waiting = [g for g in store.generations(row.id) if g.state != GEN_DONE]
    assert [g.state for g in waiting] == [GEN_PENDING]  # no intent was recorded
    assert waiting[0].error is not None and "max_spend.images" in waiting[0].error

    same = await _run(job, emulator, tmp_path)  # the ceiling unchanged: still nothing sent
    assert same.exit_code == EXIT_SPEND_CEILING
    assert _counters(emulator)["generations_created"]["total"] == 3

    raised = _raise_ceiling(tmp_path, "images = 3", "images = 4")
    done = await _run(raised, emulator, tmp_path)
    assert done.exit_code == EXIT_OK
    assert [(s.state, s.error) for s in done.subjects] == [(DONE, None)]
    assert _counters(emulator)["generations_created"]["total"] == 4
    assert _counters(emulator)["trainings_created"]["total"] == 1


async def test_subjects_racing_for_the_last_images_cannot_both_pass_the_ceiling(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    """Two subjects' prompts go out side by side; the ceiling is checked in the transaction
    of each intent, so exactly three of the four are sent."""
    job = _job(tmp_path, "[max_spend]\nimages = 3", subjects=2, prompts=2)
    result = await _run(job, emulator, tmp_path)
    assert result.exit_code == EXIT_SPEND_CEILING
    counters = _counters(emulator)
    assert counters["trainings_created"]["total"] == 2
    assert counters["generations_created"]["total"] == 3
    assert counters["images_requested"] == 3
    assert sorted(s.state for s in result.subjects) == [DONE, GENERATING]


async def test_a_training_ceiling_keeps_the_subjects_over_it_uploaded(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    job = _job(tmp_path, "[max_spend]\ntrainings = 2", subjects=3, prompts=1)
    result = await _run(job, emulator, tmp_path)
    assert result.exit_code == EXIT_SPEND_CEILING
    assert _counters(emulator)["trainings_created"]["total"] == 2
    [stopped] = [s for s in result.subjects if s.state != DONE]
    assert stopped.state == UPLOADED and stopped.task_id is None
    assert stopped.error is not None and "max_spend.trainings = 2" in stopped.error
    raised = _raise_ceiling(tmp_path, "trainings = 2", "trainings = 3")
    assert (await _run(raised, emulator, tmp_path)).exit_code == EXIT_OK
    assert _counters(emulator)["trainings_created"]["total"] == 3


async def test_a_per_pass_ceiling_lets_each_pass_pay_its_share(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    job = _job(tmp_path, "[max_spend.per_pass]\nimages = 2", subjects=2, prompts=2)
    first = await _run(job, emulator, tmp_path)
    assert first.exit_code == EXIT_SPEND_CEILING
    assert "The next pass goes on from here" in first.ceiling[0]
    assert _counters(emulator)["generations_created"]["total"] == 2
    second = await _run(job, emulator, tmp_path)
    assert second.exit_code == EXIT_OK
    assert [s.state for s in second.subjects] == [DONE, DONE]
    with _state(tmp_path) as store:
        passes = [e.pass_id for e in store.ledger("test") if e.endpoint == "txt2img"]
    assert len(set(passes)) == 2 and sorted(passes.count(p) for p in set(passes)) == [2, 2]


class _Killed(BaseException):
    """The process dies here: nothing after it runs (not even error handling)."""


async def test_a_training_killed_between_intent_and_answer_is_on_the_books(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(tmp_path, prompts=1)

    async def killed(*_args: Any, **_kwargs: Any) -> str:
        raise _Killed

    real = ApiClient.create_training
    monkeypatch.setattr(ApiClient, "create_training", killed)
    await _run(job, emulator, tmp_path)
    with _state(tmp_path) as store:
        assert store.subjects("test")[0].state == SUBMITTING
        [entry] = store.ledger("test")
        assert (entry.endpoint, entry.units, entry.outcome) == ("training", 1, None)
        assert store.spent("test") == Tally(trainings={"subject": 1})  # unknown counts
    assert _counters(emulator)["trainings_created"]["total"] == 0

    monkeypatch.setattr(ApiClient, "create_training", real)
    result = await _run(job, emulator, tmp_path)
    assert result.subjects[0].state == DONE
    with _state(tmp_path) as store:
        first, again = [e for e in store.ledger("test") if e.endpoint == "training"]
        assert store.spent("test").trainings == {"subject": 1}
    # The name was not in the task list: the first made nothing; the second is a re-send.
    assert (first.outcome, again.outcome, again.resend) == (NOT_CREATED, CREATED, 1)
    assert _counters(emulator)["trainings_created"]["total"] == 1


async def test_a_generation_killed_or_unanswered_is_counted_again_when_sent_again(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed POST and a lost answer both leave an open row; the re-send is a row of its
    own: the ledger may count more than the service made, never less."""
    job = _job(tmp_path, prompts=1, image_num=2)
    real = ApiClient.txt2img
    calls = 0

    async def flaky(client: ApiClient, *args: Any, **kwargs: Any) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise _Killed  # the first never leaves the machine
        task_id = await real(client, *args, **kwargs)
        if calls == 2:  # the second is made, but its answer is lost
            raise TransientApiError(503, "SERVICE_UNAVAILABLE", "lost", path="/v3/async/txt2img")
        return task_id

    monkeypatch.setattr(ApiClient, "txt2img", flaky)
    await _run(job, emulator, tmp_path)
    with _state(tmp_path) as store:
        row = store.subjects("test")[0]
        assert [g.state for g in store.generations(row.id)] == [GEN_SUBMITTING]
        assert store.spent("test").images == {"txt2img": 2}
    result = await _run(job, emulator, tmp_path)
    assert result.subjects[0].state == DONE
    with _state(tmp_path) as store:
        killed, unanswered, answered = [e for e in store.ledger("test")
                                        if e.endpoint == "txt2img"]
        spent = store.spent("test")
    assert (killed.resend, unanswered.resend, answered.resend) == (0, 1, 1)
    assert (killed.outcome, unanswered.outcome, answered.outcome) == (None, None, CREATED)
    assert spent.images == {"txt2img": 6}
    assert _counters(emulator)["images_requested"] == 4 <= spent.image_count
