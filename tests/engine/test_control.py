"""People's requests (cancel, retry, regenerate) while a pass runs, and with none running."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli.samples import create_samples
from pipeline.emulator import EmulatorHandle
from pipeline.engine.control import act, regenerate_subject, request_args
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
