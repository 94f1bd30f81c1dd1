"""The whole pipeline against the emulator on a real loopback port."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.api import ApiClient
from pipeline.emulator import EmulatorHandle
from pipeline.engine.drivers import Drivers
from pipeline.engine.runner import Runner
from pipeline.engine.stages.train import training_name
from pipeline.errors import BadCredentials, LockHeld, StoreError
from pipeline.jobfile.loading import load_job
from pipeline.store.lock import job_lock
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import (
    DONE,
    FAILED,
    GEN_DONE,
    GEN_SUBMITTING,
    REJECTED,
    SUBMITTING,
    TRAINING,
    UPLOADING,
)
from pipeline.views.summary import EXIT_FAILED, EXIT_OK, EXIT_REJECTED
from tests.conftest import (
    closed_after_test,
    fast_settings,
    force_generation_state,
    force_state,
    write_job,
)
from tests.engine.folders import write_bad_subjects, write_photos, write_subjects


def setup_job(tmp_path: Path, *, subjects: int = 2, images: int = 3, bad: bool = False,
              **job_args) -> tuple:
    job_file = write_job(tmp_path, **job_args)
    names = write_subjects(tmp_path / "inbox", subjects, images)
    if bad:
        names += write_bad_subjects(tmp_path / "inbox")
    return load_job(job_file), names


async def run(job, emulator: EmulatorHandle, tmp_path: Path, max_wait: float = 20, **settings):
    config = fast_settings(emulator.base_url, tmp_path / "state", **settings)
    return await Runner(job, config).run_once(max_wait=max_wait)


def outputs(tmp_path: Path, job: str = "test") -> list[str]:
    root = tmp_path / "outbox" / job
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def store(tmp_path: Path) -> SqliteStore:
    return closed_after_test(SqliteStore(tmp_path / "state" / "state.db"))


async def test_subjects_go_from_inbox_to_pictures(tmp_path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=3, image_num=2)
    result = await run(job, emulator, tmp_path)
    assert result.exit_code == EXIT_OK
    assert [(s.name, s.state) for s in result.subjects] == [
        ("alice", DONE), ("bob", DONE), ("teapot", DONE)]
    counters = emulator.emulator.counters_snapshot()
    assert counters["trainings_created"]["total"] == 3
    assert counters["uploads"] == 9
    files = outputs(tmp_path)
    # 2 prompts x 2 pictures + sidecars, and the LoRA file, per subject
    for name in ("alice", "bob", "teapot"):
        mine = [f for f in files if f.startswith(name + "/")]
        assert len([f for f in mine if f.endswith(".png")]) == 4
        assert len([f for f in mine if f.endswith(".json")]) == 4 + 1  # + the LoRA's sidecar
        assert f"{name}/{name}.safetensors" in mine
    sidecar = json.loads(
        (tmp_path / "outbox/test/alice/01-take-1/alice-01-take-1-1.json").read_text()
    )
    assert sidecar["prompt"] == "a close photo of ohwx person, take 1"
    assert sidecar["lora"]["model_name"].startswith("model_")
    assert sidecar["generation_task_id"] and sidecar["training_task_id"]
    lora = json.loads((tmp_path / "outbox/test/alice/alice.json").read_text())
    assert lora["trigger_phrase"] == "a close photo of ohwx person"  # how to use it
    assert (lora["class_word"], lora["base_model"]) == ("person", "v1-5-pruned-emaonly")
    assert lora["training"]["max_train_steps"] == 500 and lora["training"]["width"] == 512
    assert lora["model_name"].startswith("model_") and len(lora["sha256"]) == 64
    assert [photo["file"] for photo in lora["photos"]] == sorted(
        p.name for p in (tmp_path / "inbox/alice").iterdir())


async def test_uploaded_bytes_are_the_files_on_disk(tmp_path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=2)
    await run(job, emulator, tmp_path)
    on_disk = sum(p.stat().st_size for p in (tmp_path / "inbox").rglob("*") if p.is_file())
    assert emulator.emulator.counters_snapshot()["bytes_received"] == on_disk


async def test_a_second_run_pays_for_nothing_and_downloads_nothing(tmp_path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=2)
    await run(job, emulator, tmp_path)
    before = emulator.emulator.counters_snapshot()
    again = await run(job, emulator, tmp_path)
    after = emulator.emulator.counters_snapshot()
    assert again.exit_code == EXIT_OK
    for counter in ("trainings_created", "generations_created"):
        assert after[counter] == before[counter]
    for counter in ("uploads", "images_downloaded", "models_downloaded"):
        assert after[counter] == before[counter]


async def test_bad_input_is_refused_and_the_rest_proceeds(tmp_path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=1, bad=True)
    result = await run(job, emulator, tmp_path)
    by_name = {s.name: s for s in result.subjects}
    assert result.exit_code == EXIT_REJECTED
    assert by_name["alice"].state == DONE
    assert by_name["too_many"].state == REJECTED and "51 images" in by_name["too_many"].error
    reasons = {r["file"]: r["reason"] for r in by_name["mixed_bag"].rejected_files}
    assert "GIF" in reasons["animation.jpg"] and "empty" in reasons["empty.jpg"]
    assert by_name["mixed_bag"].state == DONE  # its good photos were enough
    assert emulator.emulator.counters_snapshot()["trainings_created"]["total"] == 2


async def test_style_job_sends_captions(tmp_path, emulator) -> None:
    job_file = write_job(tmp_path, kind="style", prompts=1)
    folder = tmp_path / "inbox" / "watercolour"
    write_photos(folder, 3)
    for image in sorted(folder.iterdir()):
        image.with_suffix(".txt").write_text(f"watercolour study of {image.stem}")
    result = await run(load_job(job_file), emulator, tmp_path)
    assert result.subjects[0].state == DONE
    [training] = emulator.emulator.trainings.values()
    assert training.spec.kind == "style"
    assert all(caption.startswith("watercolour study") for caption in training.spec.captions)


async def test_style_job_without_captions_is_rejected(tmp_path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=1, kind="style")
    result = await run(job, emulator, tmp_path)
    assert result.subjects[0].state == REJECTED
    assert "caption" in result.subjects[0].error
    assert emulator.emulator.counters_snapshot()["trainings_created"]["total"] == 0


async def test_lock_held_by_another_run(tmp_path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=1)
    with job_lock(tmp_path / "state", "test"):
        with pytest.raises(LockHeld, match="another run"):
            await run(job, emulator, tmp_path)
    assert emulator.emulator.counters_snapshot()["requests"] == {}


async def test_bad_key_fails_once_without_a_storm(tmp_path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=3)
    with pytest.raises(BadCredentials) as caught:
        await run(job, emulator, tmp_path, api_key="sk-wrong-key-0000000")
    assert "sk-wrong-key-0000000" not in str(caught.value)
    requests = sum(emulator.emulator.counters_snapshot()["requests"].values())
    assert requests == 1  # 9 images to upload at once: the refusal of the first stops all


@pytest.mark.parametrize("emulator_config", [{"fault_training_failed": 1.0}], indirect=True)
async def test_failed_trainings_are_retried_within_the_bound(tmp_path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=1, extra="max_training_retries = 1")
    result = await run(job, emulator, tmp_path)
    assert result.exit_code == EXIT_FAILED
    assert result.subjects[0].state == FAILED and "failed" in result.subjects[0].error.lower()
    assert emulator.emulator.counters_snapshot()["trainings_created"]["total"] == 2


@pytest.mark.parametrize("emulator_config", [{"fault_stuck_deploying": 1.0}], indirect=True)
async def test_model_stuck_deploying_fails_after_the_deadline(tmp_path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=1)
    result = await run(job, emulator, tmp_path, deploy_deadline=0.3)
    assert result.subjects[0].state == FAILED
    assert "DEPLOYING" in result.subjects[0].error


# --- resume after a crash at each stage ---------------------------------------------------


async def test_resume_mid_upload_sends_only_what_is_missing(tmp_path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=1)
    await run(job, emulator, tmp_path, max_wait=0)  # intake only, drivers cancelled at once
    db = store(tmp_path)
    subject = db.latest("test", "alice")
    first = db.images(subject.id)[0]
    async with ApiClient(fast_settings(emulator.base_url, tmp_path)) as api:
        assets_id = await api.upload_training_image(first.path, first.format)
    db.remember_asset(first.sha256, assets_id, now=0)
    force_state(db, subject.id, now=0, state=UPLOADING)
    result = await run(job, emulator, tmp_path)
    assert result.subjects[0].state == DONE
    assert emulator.emulator.counters_snapshot()["uploads"] == 3  # 1 before the crash + 2


async def _crash_before_submit(tmp_path, emulator) -> tuple:
    job, _ = setup_job(tmp_path, subjects=1)
    db = store(tmp_path)
    await run(job, emulator, tmp_path, max_wait=0)
    subject = db.latest("test", "alice")
    async with ApiClient(fast_settings(emulator.base_url, tmp_path)) as api:
        for image in db.images(subject.id):
            assets_id = await api.upload_training_image(image.path, image.format)
            db.remember_asset(image.sha256, assets_id, now=0)
            db.set_image_asset(subject.id, image.sha256, assets_id)
    name = training_name("test", subject, 1)
    force_state(db, subject.id, now=0, state=SUBMITTING, training_name=name, attempts=1)
    return job, db, subject, name


async def test_intent_without_a_task_submits_exactly_once(tmp_path, emulator) -> None:
    job, db, _, _ = await _crash_before_submit(tmp_path, emulator)
    result = await run(job, emulator, tmp_path)
    assert result.subjects[0].state == DONE
    assert emulator.emulator.counters_snapshot()["trainings_created"]["total"] == 1


async def test_intent_whose_post_landed_is_reconciled_not_resent(tmp_path, emulator) -> None:
    job, db, subject, name = await _crash_before_submit(tmp_path, emulator)
    from pipeline.engine.stages.train import build_request

    settings = job.subject_settings(tmp_path / "inbox" / "alice")
    async with ApiClient(fast_settings(emulator.base_url, tmp_path)) as api:
        task_id = await api.create_training(
            "subject", build_request(name, db.images(subject.id), settings))
    result = await run(job, emulator, tmp_path)
    assert result.subjects[0].state == DONE and result.subjects[0].task_id == task_id
    assert emulator.emulator.counters_snapshot()["trainings_created"]["total"] == 1


async def test_a_lost_state_file_does_not_pay_twice(tmp_path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=1)
    await run(job, emulator, tmp_path)
    (tmp_path / "state" / "state.db").unlink()
    with pytest.raises(StoreError, match="already holds results"):
        await run(job, emulator, tmp_path)  # beside results: refused, nothing paid
    (tmp_path / "outbox").rename(tmp_path / "outbox-before")  # start afresh, as it says
    result = await run(job, emulator, tmp_path)
    assert result.subjects[0].state == DONE
    # the training is found again by its name: paid once
    assert emulator.emulator.counters_snapshot()["trainings_created"]["total"] == 1


async def test_resume_mid_generation_and_mid_download(tmp_path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=1, prompts=2)
    await run(job, emulator, tmp_path)
    db = store(tmp_path)
    subject = db.latest("test", "alice")
    first, second = db.generations(subject.id)
    # Crash 1: the second prompt's POST was in flight. Crash 2: one picture half-written.
    force_generation_state(db, second.id, now=0, state=GEN_SUBMITTING, task_id=None)
    folder = tmp_path / "outbox/test/alice" / second.slug
    for leftover in folder.iterdir():
        leftover.unlink()
    (folder / f".alice-{second.slug}-1.png.1234abcd.part").write_bytes(b"half a picture")
    force_state(db, subject.id, now=0, state="generating")
    before = emulator.emulator.counters_snapshot()
    result = await run(job, emulator, tmp_path)
    after = emulator.emulator.counters_snapshot()
    assert result.subjects[0].state == DONE
    assert after["generations_created"]["total"] - before["generations_created"]["total"] == 1
    assert after["images_downloaded"] - before["images_downloaded"] == 1
    stem = f"alice-{second.slug}-1"
    assert sorted(p.name for p in folder.iterdir()) == [f"{stem}.json", f"{stem}.png"]
    assert {g.state for g in db.generations(subject.id)} == {GEN_DONE}


async def test_interrupted_runs_finish_with_one_training_each(tmp_path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=3)
    for _ in range(6):
        result = await run(job, emulator, tmp_path, max_wait=0.05)
    result = await run(job, emulator, tmp_path)
    assert {s.state for s in result.subjects} == {DONE}
    assert emulator.emulator.counters_snapshot()["trainings_created"]["total"] == 3
    assert store(tmp_path).integrity_problems() == []


async def test_training_still_in_flight_is_success_for_cron(tmp_path, emulator) -> None:
    emulator.emulator.config.train_seconds = 30
    job, _ = setup_job(tmp_path, subjects=1)
    result = await run(job, emulator, tmp_path, max_wait=0.5)
    assert result.exit_code == EXIT_OK
    assert result.subjects[0].state == TRAINING


async def test_changed_photos_after_training_need_permission(tmp_path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=1)
    await run(job, emulator, tmp_path)
    extra = tmp_path / "inbox" / "alice" / "new.png"
    source = next((tmp_path / "inbox" / "alice").glob("*.png"))
    from PIL import Image

    Image.open(source).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(extra)
    result = await run(job, emulator, tmp_path)
    assert result.subjects[0].version == 1
    assert any("retrain_on_change" in w for w in result.subjects[0].warnings)
    assert emulator.emulator.counters_snapshot()["trainings_created"]["total"] == 1

    allowed = load_job(write_job(tmp_path, extra="retrain_on_change = true"))
    result = await run(allowed, emulator, tmp_path)
    assert (result.subjects[0].version, result.subjects[0].state) == (2, DONE)
    assert emulator.emulator.counters_snapshot()["trainings_created"]["total"] == 2
    assert (tmp_path / "outbox/test/alice/v2/alice@v2.safetensors").is_file()


async def test_rejected_folder_fixed_becomes_a_new_version(tmp_path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=0, bad=True)
    result = await run(job, emulator, tmp_path)
    assert {s.name: s.state for s in result.subjects}["too_many"] == REJECTED
    extra = sorted((tmp_path / "inbox" / "too_many").iterdir())[-1]
    extra.unlink()
    result = await run(job, emulator, tmp_path)
    too_many = {s.name: s for s in result.subjects}["too_many"]
    assert too_many.version == 2 and too_many.state == DONE


async def test_watch_takes_in_folders_as_they_appear(tmp_path, emulator) -> None:
    import asyncio

    job, _ = setup_job(tmp_path, subjects=0)
    runner = Runner(job, fast_settings(emulator.base_url, tmp_path / "state"))
    watching = asyncio.create_task(runner.watch())
    write_subjects(tmp_path / "inbox", 1, 3)
    db = store(tmp_path)
    for _ in range(200):  # the watcher reacts to the file system: bounded real wait
        subject = db.latest("test", "alice")
        if subject is not None and subject.state == DONE:
            break
        await asyncio.sleep(0.05)
    runner.stop()
    result = await asyncio.wait_for(watching, 10)
    assert [(s.name, s.state) for s in result.subjects] == [("alice", DONE)]
    assert result.exit_code == EXIT_OK


# --- intake runs off the event loop, inside the pass's deadline --------------------------


class _ShiftedClock:
    """The system clock, moved forward by ``shift`` seconds when a test says so."""

    def __init__(self) -> None:
        self.shift = 0.0

    def now(self) -> float:
        import time

        return time.time() + self.shift

    async def sleep(self, seconds: float) -> None:
        import asyncio

        await asyncio.sleep(max(0.0, seconds))


async def test_a_stop_during_intake_ends_the_pass_and_starts_no_work(
    tmp_path, emulator, monkeypatch
) -> None:
    import asyncio
    import signal
    import threading

    from pipeline.engine.stages import intake as intake_stage
    from pipeline.inputs.dataset import Stopped

    job, _ = setup_job(tmp_path, subjects=1)
    validating = threading.Event()

    def slow_validation(*_args, stop: threading.Event, **_kwargs):
        validating.set()
        assert stop.wait(timeout=10), "the stop never reached the validation thread"
        raise Stopped

    monkeypatch.setattr(intake_stage, "validate_subject", slow_validation)
    runner = Runner(job, fast_settings(emulator.base_url, tmp_path / "state"))
    running = asyncio.create_task(runner.run_once(max_wait=20))
    assert await asyncio.to_thread(validating.wait, 10)
    runner.stop(signal.SIGTERM)  # the loop is free while intake reads: this runs at once
    result = await asyncio.wait_for(running, 5)

    assert result.signal == signal.SIGTERM
    assert result.subjects == []  # nothing half-validated was recorded
    assert emulator.emulator.counters_snapshot()["uploads"] == 0


@pytest.mark.parametrize(("max_wait", "left"), [(60, 0.0), (130, 30.0)])
async def test_max_wait_counts_from_the_start_of_the_pass(
    tmp_path, emulator, monkeypatch, max_wait: float, left: float
) -> None:
    from pipeline.engine import drivers as drivers_module
    from pipeline.engine.stages import intake as intake_stage

    job, _ = setup_job(tmp_path, subjects=1)
    clock = _ShiftedClock()
    validate = intake_stage.validate_subject

    def validation_taking_100_s(*args, **kwargs):
        clock.shift += 100
        return validate(*args, **kwargs)

    waits: list[float] = []
    wait = drivers_module.Drivers.wait

    async def spy(self, *, timeout: float, stop) -> None:
        waits.append(timeout)
        await wait(self, timeout=timeout, stop=stop)

    monkeypatch.setattr(intake_stage, "validate_subject", validation_taking_100_s)
    monkeypatch.setattr(drivers_module.Drivers, "wait", spy)
    settings = fast_settings(emulator.base_url, tmp_path / "state")

    result = await Runner(job, settings, clock=clock).run_once(max_wait=max_wait)

    (waited,) = waits
    assert left - 1 < waited <= left  # what was left of max_wait after a 100 s intake
    assert (result.subjects[0].state == DONE) is (left > 0)


async def test_leftovers_are_not_cleaned_through_a_link_at_outbox_job(
    tmp_path, emulator
) -> None:
    job, _ = setup_job(tmp_path, subjects=1)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "alice").mkdir(parents=True)
    leftover = elsewhere / "alice" / ".alice.safetensors.1234abcd.part"
    leftover.write_bytes(b"not the pipeline's")
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "test").symlink_to(elsewhere)

    result = await run(job, emulator, tmp_path)

    assert leftover.read_bytes() == b"not the pipeline's"
    assert sorted(p.name for p in elsewhere.rglob("*")) == [leftover.name, "alice"]
    assert "is a link or a file where the pipeline keeps a folder" in (
        result.subjects[0].error or " ".join(result.subjects[0].warnings)
    )


async def test_no_driver_starts_again_once_the_key_is_refused() -> None:
    drivers = Drivers()

    async def refused() -> None:
        raise BadCredentials(401, "UNAUTHORIZED", "the key is refused", "/v3/assets")

    task = asyncio.create_task(refused())
    drivers.watch_task(task)
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)  # the done callback runs
    assert drivers.failed.is_set()

    started: list[str] = []
    services = SimpleNamespace()
    subject = SimpleNamespace(id=1, name="alice")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("pipeline.engine.drivers.drive",
                      lambda *_: started.append("alice") or asyncio.sleep(0))
        drivers.start(services, subject)  # type: ignore[arg-type]
    assert started == []
