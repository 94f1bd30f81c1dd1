"""``plan`` against the emulator: not one request, nothing written, and numbers that the
following real pass's ledger and the service's own counters bear out."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pipeline.emulator import EmulatorHandle
from pipeline.engine.plan import PassPlan, plan_pass
from pipeline.engine.runner import Runner, RunResult
from pipeline.jobfile.loading import JobConfig, load_job
from pipeline.store.ledger import Tally
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import GEN_PENDING, GEN_SUBMITTING, GENERATING
from pipeline.views.summary import EXIT_OK, EXIT_SPEND_CEILING
from tests.conftest import fast_settings, force_generation_state, write_job
from tests.engine.folders import write_bad_subjects, write_photos, write_subjects


def _job(tmp_path: Path, ceiling: str = "", **job_args: Any) -> JobConfig:
    return load_job(write_job(tmp_path, extra=f"\n{ceiling}\n" if ceiling else "", **job_args))


async def _run(job: JobConfig, emulator: EmulatorHandle, tmp_path: Path) -> RunResult:
    return await Runner(job, fast_settings(emulator.base_url, tmp_path / "state")).run_once(
        max_wait=20)


def _plan(job: JobConfig, tmp_path: Path) -> PassPlan:
    path = tmp_path / "state" / "state.db"
    if not path.exists():
        return plan_pass(job, SqliteStore(":memory:"), now=2_000_000_000.0)
    with SqliteStore(path, read_only=True) as store:
        return plan_pass(job, store, now=2_000_000_000.0)


def _spent(tmp_path: Path) -> Tally:
    with SqliteStore(tmp_path / "state" / "state.db", read_only=True) as store:
        return store.spent("test")


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _snapshot(emulator: EmulatorHandle) -> dict[str, Any]:
    return emulator.emulator.counters_snapshot()


async def test_a_plan_sends_nothing_writes_nothing_and_the_run_pays_exactly_that(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    job = _job(tmp_path, prompts=2, image_num=2)
    write_subjects(tmp_path / "inbox", 2, 3)
    write_bad_subjects(tmp_path / "inbox")  # a bag with refused photos, one with too many
    before = _snapshot(emulator)
    files = _files(tmp_path)
    plan = _plan(job, tmp_path)
    assert _snapshot(emulator) == before and before["requests"] == {}  # not one request
    assert _files(tmp_path) == files  # nothing written, no state, no photo cache
    by_name = {s.name: s for s in plan.subjects}
    assert set(by_name) == {"alice", "bob", "mixed_bag", "too_many"}
    assert [(r.endpoint, r.units, r.prompt) for r in by_name["alice"].requests] == [
        ("training", 1, None), ("txt2img", 2, "01-take-1"), ("txt2img", 2, "02-take-2")]
    assert {file for file, _ in by_name["mixed_bag"].refused} == {"empty.jpg", "animation.jpg"}
    assert by_name["too_many"].requests == ()
    assert by_name["too_many"].note is not None and "rejected" in by_name["too_many"].note
    assert plan.total == Tally(trainings={"subject": 3}, images={"txt2img": 12})
    assert plan.stopped == []

    await _run(job, emulator, tmp_path)
    counters = _snapshot(emulator)
    assert _spent(tmp_path) == plan.total
    assert counters["trainings_created"]["total"] == plan.total.training_count
    assert counters["images_requested"] == plan.total.image_count
    assert _plan(job, tmp_path).total == Tally()  # nothing left to pay for


async def test_a_plan_counts_what_trained_subjects_still_need_and_what_the_ceiling_stops(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    job = _job(tmp_path, "[max_spend]\nimages = 3", prompts=4, image_num=1)
    write_subjects(tmp_path / "inbox", 1, 3)
    plan = _plan(job, tmp_path)
    assert plan.total == Tally(trainings={"subject": 1}, images={"txt2img": 3})
    [(stopped, why)] = plan.stopped
    assert stopped.prompt == "04-take-4" and "max_spend.images = 3" in why
    first = await _run(job, emulator, tmp_path)
    assert first.exit_code == EXIT_SPEND_CEILING
    assert _spent(tmp_path) == plan.total  # the plan said what the ceiling would let through

    job_file = Path(job.path)
    job_file.write_text(job_file.read_text().replace("images = 3", "images = 10"))
    raised = load_job(job_file)
    before = _snapshot(emulator)
    state = {name: digest for name, digest in _files(tmp_path / "state").items()
             if not name.endswith(("-shm", "-wal"))}
    left = _plan(raised, tmp_path)
    assert _snapshot(emulator) == before
    assert {name: digest for name, digest in _files(tmp_path / "state").items()
            if not name.endswith(("-shm", "-wal"))} == state  # the state and the photo cache
    [alice] = left.subjects
    assert alice.state == GENERATING  # trained, not finished
    assert [(r.endpoint, r.prompt) for r in alice.requests] == [("txt2img", "04-take-4")]
    assert left.total == Tally(images={"txt2img": 1}) and left.stopped == []
    second = await _run(raised, emulator, tmp_path)
    assert second.exit_code == EXIT_OK
    after = _snapshot(emulator)
    assert after["images_requested"] - before["images_requested"] == left.total.image_count
    assert after["trainings_created"] == before["trainings_created"]


async def test_a_plan_counts_resends_and_new_versions_it_would_take_in(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    job = _job(tmp_path, "retrain_on_change = true", prompts=2, image_num=3)
    write_subjects(tmp_path / "inbox", 1, 3)
    await _run(job, emulator, tmp_path)
    with SqliteStore(tmp_path / "state" / "state.db") as store:
        row = store.subjects("test")[0]
        first, second = store.generations(row.id)
        store._db.execute("UPDATE subjects SET state = 'generating' WHERE id = ?", (row.id,))
        force_generation_state(store, first.id, now=1.0, state=GEN_SUBMITTING, task_id=None)
        force_generation_state(store, second.id, now=1.0, state=GEN_PENDING, task_id=None)
    plan = _plan(job, tmp_path)
    [alice] = plan.subjects
    assert [(r.prompt, r.resend) for r in alice.requests] == [
        ("01-take-1", True), ("02-take-2", False)]
    assert plan.total == Tally(images={"txt2img": 6})

    write_photos(tmp_path / "inbox" / "alice", 1, first_seed=777, stem="new")  # a new version
    plan = _plan(job, tmp_path)
    [alice] = plan.subjects
    assert (alice.version, alice.state) == (2, "new")  # replaces version 1's work
    assert plan.total == Tally(trainings={"subject": 1}, images={"txt2img": 6})
