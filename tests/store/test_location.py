"""Where a job's state lives: with its outbox, the same from every working directory, and
never started afresh beside results it would pay for again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.cli.samples import create_samples
from pipeline.config import Settings
from pipeline.emulator import EmulatorHandle
from pipeline.engine.runner import Runner
from pipeline.errors import LockHeld, StoreError
from pipeline.jobfile.loading import JobConfig, load_job
from pipeline.store.location import (
    STATE_FOLDER,
    first_result,
    open_reader,
    open_store,
    state_dir,
    state_file,
)
from pipeline.store.lock import job_lock
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import DONE, VALIDATED
from tests.conftest import fast_settings, write_job


def default_place(base_url: str = "http://127.0.0.1:9", **overrides: object) -> Settings:
    """``fast_settings`` without the ``LORA_STATE_DIR`` override every other test passes."""
    return fast_settings(base_url, None, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def job(tmp_path: Path) -> JobConfig:
    return load_job(write_job(tmp_path / "project"))


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


# --- where ------------------------------------------------------------------------------------


def test_the_state_lives_with_the_job_outbox_unless_overridden(job: JobConfig,
                                                               tmp_path: Path) -> None:
    outbox = tmp_path / "project" / "outbox" / "test"
    assert state_dir(job, default_place()) == outbox / STATE_FOLDER
    assert state_file(job, default_place()) == outbox / ".lora-pipeline" / "state.db"
    elsewhere = tmp_path / "state"
    assert state_dir(job, fast_settings("http://127.0.0.1:9", elsewhere)) == elsewhere


@pytest.mark.parametrize("planted", ["test", "test/.lora-pipeline"])
def test_a_link_planted_at_the_job_folder_or_the_state_folder_is_refused(
    job: JobConfig, tmp_path: Path, planted: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = job.job.outbox / planted
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere, target_is_directory=True)
    for call in (state_dir, open_store, open_reader):
        with pytest.raises(StoreError, match="is a link or a file") as refused:
            call(job, default_place())
        assert str(link) in str(refused.value)
    assert list(elsewhere.iterdir()) == []


def test_an_empty_setting_means_the_default_place() -> None:
    assert Settings(_env_file=None).state_dir is None  # type: ignore[call-arg]
    assert Settings(_env_file=None, state_dir="").state_dir is None  # type: ignore[call-arg]


def test_results_are_files_other_than_the_report_the_state_and_temp_files(tmp_path: Path) -> None:
    folder = tmp_path / "test"
    assert first_result(folder) is None
    (folder / STATE_FOLDER).mkdir(parents=True)
    (folder / STATE_FOLDER / "state.db").write_bytes(b"x")
    (folder / "report.html").write_text("<html>")
    (folder / "report.json").write_text("{}")
    (folder / "alice").mkdir()
    (folder / "alice" / ".alice.safetensors.1234abcd.part").write_bytes(b"half")
    assert first_result(folder) is None
    sidecar = folder / "alice" / "01-take-1" / "alice-01-take-1-1.json"
    sidecar.parent.mkdir()
    sidecar.write_text("{}")
    assert first_result(folder) == sidecar
    (folder / "alice" / "alice.safetensors").write_bytes(b"lora")
    assert first_result(folder) == folder / "alice" / "alice.safetensors"


# --- one store, one lock, one set of results, from any working directory --------------------


async def test_the_same_job_from_two_working_directories_shares_one_store(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = load_job(write_job(tmp_path / "project"))
    create_samples(tmp_path / "project" / "inbox", count=2, images_per_subject=3,
                   include_bad=False)
    settings = default_place(emulator.base_url)
    first, second = tmp_path / "cron", tmp_path / "shell"
    first.mkdir()
    second.mkdir()

    monkeypatch.chdir(first)
    result = await Runner(job, settings).run_once(max_wait=20)
    assert {s.state for s in result.subjects} == {DONE}
    outbox = tmp_path / "project" / "outbox" / "test"
    results = _files(outbox)
    before = emulator.emulator.counters_snapshot()

    monkeypatch.chdir(second)
    again = await Runner(job, settings).run_once(max_wait=20)
    after = emulator.emulator.counters_snapshot()
    assert [(s.name, s.state) for s in again.subjects] == [("alice", DONE), ("bob", DONE)]
    for counter in ("uploads", "trainings_created", "generations_created", "images_downloaded",
                    "models_downloaded"):
        assert after[counter] == before[counter], counter  # nothing sent or paid twice
    assert _files(outbox) == results
    assert (outbox / ".lora-pipeline" / "state.db").is_file()
    assert list(first.iterdir()) == [] and list(second.iterdir()) == []  # no stray stores

    # One lock: held for the job (from wherever), a run from any folder does nothing.
    with job_lock(state_dir(job, settings), "test"):
        monkeypatch.chdir(first)
        with pytest.raises(LockHeld):
            await Runner(job, settings).run_once(max_wait=20)
    assert emulator.emulator.counters_snapshot()["requests"] == after["requests"]


# --- never a fresh store beside old results ------------------------------------------------


def _leave_results(job: JobConfig) -> Path:
    lora = job.job.outbox / "test" / "alice" / "alice.safetensors"
    lora.parent.mkdir(parents=True)
    lora.write_bytes(b"a trained LoRA")
    return lora


@pytest.mark.parametrize("state", ["missing", "empty", "no subject of the job"])
def test_no_state_beside_results_is_refused(job: JobConfig, state: str) -> None:
    settings = default_place()
    path = state_file(job, settings)
    lora = _leave_results(job)
    if state == "empty":
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    elif state == "no subject of the job":
        with SqliteStore(path) as other:
            other.add_version("another-job", "alice", "fp", "subject", state=VALIDATED, now=1)
    for opener in (open_store, open_reader):
        with pytest.raises(StoreError) as refused:
            opener(job, settings)
        message = str(refused.value)
        assert str(path) in message and str(job.job.outbox / "test") in message
        assert str(lora) in message
        assert "Restore the state file" in message and "move" in message
    assert path.exists() == (state != "missing")  # nothing was created
    if state == "empty":
        assert path.stat().st_size == 0


def test_the_report_alone_is_no_reason_to_refuse(job: JobConfig) -> None:
    (job.job.outbox / "test").mkdir(parents=True)
    (job.job.outbox / "test" / "report.json").write_text("{}")
    assert open_reader(job, default_place()) is None
    with open_store(job, default_place()) as store:
        assert store.subjects("test") == []


def test_a_reader_creates_nothing_and_a_store_is_made_where_it_belongs(
    job: JobConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path)
    assert open_reader(job, default_place()) is None
    assert _files(tmp_path) == before
    with open_store(job, default_place()) as store:
        store.add_version("test", "alice", "fp", "subject", state=VALIDATED, now=1)
    assert not (tmp_path / ".lora-pipeline").exists()
    reader = open_reader(job, default_place())
    assert reader is not None
    with reader:
        assert reader.read_only and reader.latest("test", "alice") is not None
    assert os.path.commonpath([state_file(job, default_place()), job.job.outbox]) == str(
        job.job.outbox)
