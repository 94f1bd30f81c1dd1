"""People's requests (cancel, retry, regenerate) while a pass runs, and with none running."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pipeline.api import ApiClient
from pipeline.cli.samples import create_samples
from pipeline.emulator import EmulatorHandle
from pipeline.engine.control import (
    act,
    cancel_subject,
    regenerate_subject,
    request_args,
    retry_subject,
)
from pipeline.engine.drivers import Drivers
from pipeline.engine.runner import Runner
from pipeline.errors import StateConflict
from pipeline.jobfile.loading import load_job
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import CANCELED, DONE, GEN_DONE, TRAINING
from tests.conftest import fast_settings, write_job


def _job(tmp_path: Path, prompts: int = 1) -> Any:
    job_file = write_job(tmp_path, prompts=prompts)
    create_samples(tmp_path / "inbox", count=1, images_per_subject=2, include_bad=False)
    return load_job(job_file)


def _store(tmp_path: Path) -> SqliteStore:  # used as `with _store(...) as store:`
    return SqliteStore(tmp_path / "state" / "state.db")


async def _until(condition: Any, timeout: float = 10.0) -> None:
    """Wait for the engine (on its own loop) to reach ``condition``; fails after timeout."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_cancel_reaches_a_running_watch_before_it_pays_for_pictures(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    emulator.emulator.config.train_seconds = 10_000  # the training never ends by itself
    job = _job(tmp_path)
    runner = Runner(job, fast_settings(emulator.base_url, tmp_path / "state"))
    watching = asyncio.create_task(runner.watch())
    with _store(tmp_path) as store:
        await _until(lambda: (row := store.latest("test", "alice")) is not None
                     and row.state == TRAINING)
        store.add_request("test", "alice", "cancel", {}, now=0)
        await _until(lambda: store.latest("test", "alice").state == CANCELED)
        [request] = [r for r in store._db.execute("SELECT * FROM requests")]
        assert request["done_at"] is not None and "canceled here" in request["outcome"]
    assert not watching.done()  # the watch goes on with the other subjects
    runner.stop()
    await watching
    assert emulator.emulator.counters_snapshot()["generations_created"]["total"] == 0


async def test_a_prompt_added_to_the_job_is_generated_for_a_done_subject_on_request(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    job = _job(tmp_path, prompts=1)
    settings = fast_settings(emulator.base_url, tmp_path / "state")
    await Runner(job, settings).run_once(max_wait=20)
    grown = load_job(write_job(tmp_path, prompts=2))  # a second prompt in the job file
    with _store(tmp_path) as store:
        outcome = regenerate_subject(store, grown, "alice", prompts=[], new=True, now=1)
        assert outcome == "alice: 1 prompt(s) will be generated (1 new)"
    result = await Runner(grown, settings).run_once(max_wait=20)
    assert result.subjects[0].state == DONE
    with _store(tmp_path) as store:
        generations = store.generations(store.latest("test", "alice").id)
    assert [(g.slug, g.state) for g in generations] == [
        ("01-take-1", GEN_DONE), ("02-take-2", GEN_DONE)]
    assert emulator.emulator.counters_snapshot()["generations_created"]["total"] == 2


async def test_regenerating_a_chosen_prompt_pays_for_that_one_only(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    job = _job(tmp_path, prompts=2)
    settings = fast_settings(emulator.base_url, tmp_path / "state")
    await Runner(job, settings).run_once(max_wait=20)
    with _store(tmp_path) as store:
        with pytest.raises(StateConflict, match="has no prompt 03-nope"):
            regenerate_subject(store, job, "alice", prompts=["03-nope"], new=False, now=1)
        request_id = store.add_request("test", "alice", "regenerate",
                                       request_args("regenerate", prompts=["02-take-2"]), now=1)
        outcome = act(store, job, store.request(request_id), now=1)
        assert outcome == "alice: 1 prompt(s) will be generated (0 new)"
    await Runner(job, settings).run_once(max_wait=20)
    assert emulator.emulator.counters_snapshot()["generations_created"]["total"] == 3


async def test_a_retry_after_canceling_an_unanswered_create_never_pays_twice(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create POST reached the service but its answer never came; the subject is
    canceled in `submitting`, then retried: the training is found by its name and
    followed, not paid for again under a new name."""
    job = _job(tmp_path)
    settings = fast_settings(emulator.base_url, tmp_path / "state")
    real = ApiClient.create_training

    async def no_answer(client: ApiClient, kind: Any, request: Any) -> str:
        await real(client, kind, request)
        await asyncio.Event().wait()  # the answer is lost
        raise AssertionError("unreachable")

    monkeypatch.setattr(ApiClient, "create_training", no_answer)
    await Runner(job, settings).run_once(max_wait=1)
    with _store(tmp_path) as store:
        assert store.latest("test", "alice").state == "submitting"
        said = cancel_subject(store, "test", "alice", now=1)
        assert "may hold training" in said
        retry_subject(store, "test", "alice", now=2)
    monkeypatch.setattr(ApiClient, "create_training", real)
    result = await Runner(job, settings).run_once(max_wait=20)
    assert result.subjects[0].state == DONE
    assert emulator.emulator.counters_snapshot()["trainings_created"]["total"] == 1


def test_a_subject_held_for_a_request_is_not_restarted_until_released() -> None:
    drivers = Drivers()
    row: Any = type("Row", (), {"id": 7, "name": "alice"})()

    class Store:
        def subjects(self, job: str, *, states: Any) -> list[Any]:
            return [row]

    started: list[Any] = []
    services: Any = type("S", (), {"ctx": type("C", (), {"store": Store(), "job_name": "t"})()})()

    async def run() -> None:
        monkey = pytest.MonkeyPatch()
        monkey.setattr("pipeline.engine.drivers.drive", lambda _s, subject: _record(subject))
        try:
            await drivers.stop(row, hold=True)
            drivers.start_all(services)
            assert started == []
            drivers.release(row)
            drivers.start_all(services)
            await asyncio.sleep(0)
            assert started == [row]
        finally:
            monkey.undo()

    async def _record(subject: Any) -> Any:
        started.append(subject)
        return subject

    asyncio.run(run())
