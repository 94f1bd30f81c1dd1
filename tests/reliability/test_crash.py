"""Crash consistency: SIGKILL at random moments, SIGTERM and SIGINT at known ones.

The pipeline runs as a real process and the emulator in another one (see
:mod:`tests.reliability.harness`); a killed pass is started again, and at the end the
emulator's own records, the outbox and the state store are checked.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from pipeline.api.client import ApiClient
from pipeline.engine.stages.generate import MAX_UNCERTAIN_RESENDS
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import DONE, GEN_DONE, GEN_SUBMITTING, GENERATING, TRAINING, UPLOADING
from pipeline.views.summary import EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM

from .conftest import FIGURES, assert_outbox_exact, make_job, open_store, record, run_pass
from .harness import (
    JOB,
    EmulatorProcess,
    SoakConfig,
    add_subjects,
    run_soak,
    start_pipeline,
    subject_names,
    subject_rows,
    temp_files,
    write_workspace,
)


@pytest.mark.timeout(300)
def test_random_sigkills_never_pay_twice_nor_lose_a_picture(tmp_path) -> None:
    config = SoakConfig(subjects=30, kills=20, seed=1)
    report = run_soak(config, tmp_path)
    summary = "\n".join(report.lines())
    assert report.problems == [], summary
    assert report.kills >= 20, summary
    assert report.subjects >= 30
    assert report.duplicate_trainings == 0 and report.results_lost == 0, summary
    assert report.pictures_present == report.pictures_expected > 0, summary
    assert report.temp_files_at_end == 0
    busy = sum(v for k, v in report.kills_in_flight.items() if not k.startswith("nothing"))
    assert busy >= 15, summary  # the kills landed on work in flight, not on idle passes
    assert {"429", "5xx", "drop"} <= set(report.faults_injected), summary
    assert report.integrity_checks >= report.kills  # after each kill (once a state exists) + end
    record("faults injected", report.faults_injected)
    record("crash harness", {
        "SIGKILLs survived": report.kills, "subjects": report.subjects,
        "duplicate trainings": report.duplicate_trainings, "results lost": report.results_lost,
        "pictures present exactly once": report.pictures_present,
        "temp files left at the end": report.temp_files_at_end,
        "generation tasks": report.generation_tasks,
        "generation tasks never recorded": report.generation_tasks_unrecorded,
        "generation POSTs cut by a kill": report.generation_posts_cut,
        "generation re-sends after a lost answer": report.generation_resends,
    })


# --- graceful stops -----------------------------------------------------------------------


def wait_for_state(workdir: Path, state: str, timeout: float = 30) -> None:
    """Until a subject is recorded in ``state`` (bounded real wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(row.state == state for row in subject_rows(workdir / "state" / "state.db")):
            return
        time.sleep(0.02)
    raise AssertionError(f"no subject reached {state} within {timeout} s")


def stop_at(workdir: Path, job: Path, number: int, state: str, signum: int) -> tuple[int, float]:
    """Start pass ``number``, send ``signum`` once a subject is in ``state``;
    returns (exit code, seconds it took to stop)."""
    process = start_pipeline(workdir, number, "run", str(job), "--max-wait", "60")
    try:
        wait_for_state(workdir, state)
        time.sleep(0.2)  # into the stage's work
        sent = time.monotonic()
        process.send_signal(signum)
        code = process.wait(15)
        return code, time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def states(workdir: Path) -> dict[str, str]:
    with SqliteStore(workdir / "state" / "state.db") as store:
        assert store.integrity_problems() == []
        return {s.name: s.state for s in store.subjects(JOB)}


@pytest.mark.timeout(180)
def test_sigterm_and_sigint_stop_cleanly_at_every_stage(tmp_path) -> None:
    timings = {"queue_seconds": 0.2, "train_seconds": 2.0, "deploy_seconds": 0.2,
               "generation_queue_seconds": 0.2, "generation_seconds": 2.0,
               "upload_bandwidth": 2048, "seed": 3}
    emulator = EmulatorProcess(tmp_path, timings)
    try:
        config = SoakConfig(subjects=2, images=2, max_training_retries=0)
        job = write_workspace(tmp_path, emulator.base_url, config)
        add_subjects(tmp_path, subject_names(2), 2, seed=3)
        stops = [
            (1, UPLOADING, signal.SIGINT, EXIT_SIGINT),
            (2, TRAINING, signal.SIGTERM, EXIT_SIGTERM),
            (3, GENERATING, signal.SIGINT, EXIT_SIGINT),
        ]
        for number, stage, signum, expected in stops:
            code, seconds = stop_at(tmp_path, job, number, stage, signum)
            assert code == expected, (stage, code, (tmp_path / f"logs/{number:03d}.err"))
            assert seconds < 5
            assert stage in states(tmp_path).values()  # where it stood was written down
            assert "run.stopping" in (tmp_path / f"logs/{number:03d}.err").read_text()
            name = signal.Signals(signum).name
            record("graceful stops", {f"{name} in {stage} -> exit {code}": 1,
                                      "slowest stop (ms)": 0})
            slowest = max(FIGURES["graceful stops"]["slowest stop (ms)"], round(seconds * 1000))
            FIGURES["graceful stops"]["slowest stop (ms)"] = slowest
        final = start_pipeline(tmp_path, 4, "run", str(job), "--max-wait", "60")
        assert final.wait(90) == EXIT_OK
        assert set(states(tmp_path).values()) == {DONE}
        assert len(emulator.trainings()) == 2
        assert emulator.counters()["trainings_created"]["total"] == 2
        assert temp_files(tmp_path / "outbox") == []
        root = tmp_path / "outbox" / JOB
        pictures = sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))
        assert len(pictures) == 4, pictures
        for picture in pictures:  # s000/<slug>/s000-<slug>-<n>.png
            subject, slug, name = picture.split("/")
            assert name.startswith(f"{subject}-{slug}-") and name[-5] in "12", picture
    finally:
        emulator.stop()


# --- interrupted passes, in process ---------------------------------------------------------


async def test_creates_cut_without_an_answer_are_sent_again_a_bounded_number_of_times(
    tmp_path, emulator, monkeypatch
) -> None:
    # A pass that ends while a txt2img POST still has no answer after the grace period
    # leaves the prompt `submitting`: its outcome is unknown. Each later pass sends it
    # again, at most MAX_UNCERTAIN_RESENDS times (never counted as lost results); one more
    # fails the prompt with a reason instead of paying on and on.
    job = make_job(tmp_path, subjects=1, image_num=1)
    txt2img = ApiClient.txt2img

    async def never_answers(client, request, extra=None):
        await asyncio.Event().wait()

    monkeypatch.setattr(ApiClient, "txt2img", never_answers)
    for _ in range(MAX_UNCERTAIN_RESENDS):
        await run_pass(job, emulator.base_url, tmp_path, max_wait=1)
        with open_store(tmp_path) as store:
            [generation] = store.generations(store.subjects("test")[0].id)
        assert generation.state == GEN_SUBMITTING
    monkeypatch.setattr(ApiClient, "txt2img", txt2img)
    result = await run_pass(job, emulator.base_url, tmp_path)
    assert result.subjects[0].state == DONE and result.subjects[0].error is None
    with open_store(tmp_path) as store:
        [generation] = store.generations(store.subjects("test")[0].id)
    assert generation.state == GEN_DONE and generation.submissions == 1
    assert generation.uncertain == MAX_UNCERTAIN_RESENDS
    assert assert_outbox_exact(tmp_path, image_num=1) == 1
