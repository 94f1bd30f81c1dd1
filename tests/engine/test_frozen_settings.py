"""A version's settings are frozen when it is taken in: the later stages read them from the
store, whatever the job file or the folder's ``subject.toml`` say by then, or if the folder
is gone."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pipeline.api import ApiClient, DatasetItem, ExpertSetting, TrainingRequest
from pipeline.cli.samples import create_samples
from pipeline.clock import ManualClock
from pipeline.emulator import EmulatorConfig, EmulatorHandle, serve_emulator
from pipeline.engine.runner import Runner
from pipeline.engine.stages.context import StageContext
from pipeline.engine.stages.intake import intake
from pipeline.engine.stages.monitor import TrainingMonitor
from pipeline.errors import StoreError
from pipeline.jobfile.loading import SubjectSettings, load_job
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import DONE, GEN_PENDING, TRAINED, TRAINING, VALIDATED
from tests.conftest import (
    EMULATOR_KEY,
    closed_after_test,
    fast_settings,
    force_generation_state,
    force_state,
    write_job,
)

SUBJECT_TOML = """
extra_prompts = ["{instance_prompt}, from subject.toml"]
[generation]
lora_strength = 0.55
"""


async def test_a_folder_deleted_after_training_keeps_its_overrides(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    job = load_job(write_job(tmp_path, prompts=1))
    create_samples(tmp_path / "inbox", count=1, images_per_subject=3, include_bad=False)
    (tmp_path / "inbox" / "alice" / "subject.toml").write_text(SUBJECT_TOML)
    settings = fast_settings(emulator.base_url, tmp_path / "state")
    first = await Runner(job, settings).run_once(max_wait=20)
    assert [(s.name, s.state) for s in first.subjects] == [("alice", DONE)]
    # A pass that stopped once the training was done left its prompts to do; then the
    # folder went away.
    db = closed_after_test(SqliteStore(tmp_path / "state" / "state.db"))
    subject = db.latest("test", "alice")
    assert subject is not None
    for generation in db.generations(subject.id):
        force_generation_state(db, generation.id, now=0, state=GEN_PENDING, task_id=None,
                               image_count=0)
    force_state(db, subject.id, now=0, state=TRAINED)
    shutil.rmtree(tmp_path / "outbox" / "test" / "alice")
    shutil.rmtree(tmp_path / "inbox" / "alice")

    again = await Runner(job, settings).run_once(max_wait=20)

    assert [(s.name, s.state) for s in again.subjects] == [("alice", DONE)]
    sidecars = sorted((tmp_path / "outbox" / "test" / "alice").glob("*/*.json"))
    assert [path.parent.name for path in sidecars] == ["01-take-1", "02-from-subject-toml"]
    for path in sidecars:
        assert json.loads(path.read_text())["lora"]["strength"] == 0.55


async def _start_subject_training(api: ApiClient, tmp_path: Path) -> str:
    image = tmp_path / "face.png"
    Image.new("RGB", (64, 64), "tan").save(image)
    request = TrainingRequest(
        name="alice-v1", base_model="v1-5-pruned-emaonly",
        image_dataset_items=[DatasetItem(assets_id=await api.upload_training_image(image, "png"))],
        expert_setting=ExpertSetting(instance_prompt="a photo of ohwx person",
                                     class_prompt="person"),
    )
    return await api.create_training("subject", request)


@pytest.mark.parametrize("edited", ["subject.toml", "job file"])
async def test_kind_edited_after_submission_changes_nothing_for_the_version(
    tmp_path: Path, edited: str
) -> None:
    emulated = ManualClock()
    config = EmulatorConfig(api_keys=[EMULATOR_KEY], queue_seconds=1, train_seconds=10,
                            deploy_seconds=5)
    job = load_job(write_job(tmp_path, prompts=1))
    create_samples(tmp_path / "inbox", count=1, images_per_subject=3, include_bad=False)
    store = closed_after_test(SqliteStore(tmp_path / "state.db"))
    [row] = intake(job, store, emulated).new_versions
    assert row.frozen is not None
    async with serve_emulator(config, clock=emulated) as server:
        settings = fast_settings(server.base_url, tmp_path / "state")
        async with ApiClient(settings) as api:
            task_id = await _start_subject_training(api, tmp_path)
            row = force_state(store, row.id, now=emulated.now(), state=TRAINING,
                              task_id=task_id, submitted_at=emulated.now())
            style = '[training]\nkind = "style"\nbase_model = "chilloutmix_NiPrunedFp32Fix"\n'
            if edited == "subject.toml":
                (tmp_path / "inbox" / "alice" / "subject.toml").write_text(style)
            else:
                job = load_job(write_job(tmp_path, prompts=1, kind="style"))
            ctx = StageContext(job, settings, api, store, emulated)
            monitor = TrainingMonitor(ctx)
            waiting = asyncio.create_task(monitor.wait(row))
            await asyncio.sleep(0)

            emulated.advance(5)  # TRAINING: its progress is asked for by kind
            await monitor.poll_once()
            emulated.advance(15)  # SUCCESS and SERVING
            await monitor.poll_once()
            settled = await asyncio.wait_for(waiting, 1)

        requests = server.emulator.counters_snapshot()["requests"]
    assert requests.get("GET /v3/training/subject", 0) >= 1
    assert "GET /v3/training/style" not in requests
    assert settled.state == TRAINED and settled.kind == "subject"
    assert settled.frozen == row.frozen
    frozen = ctx.subject_settings(settled)
    assert (frozen.training.kind, frozen.training.base_model) == ("subject", "v1-5-pruned-emaonly")


def _context(tmp_path: Path, store: SqliteStore) -> StageContext:
    job = load_job(write_job(tmp_path, prompts=1))
    settings = fast_settings("http://127.0.0.1:9", tmp_path / "state")
    return StageContext(job, settings, None, store, ManualClock())  # type: ignore[arg-type]


def test_a_version_recorded_before_freezing_is_frozen_on_first_use(tmp_path: Path) -> None:
    store = closed_after_test(SqliteStore(tmp_path / "state.db"))
    ctx = _context(tmp_path, store)
    folder = ctx.job.job.inbox / "alice"
    folder.mkdir()
    (folder / "subject.toml").write_text(SUBJECT_TOML)
    old = store.add_version("test", "alice", "fp", "subject", state=VALIDATED, now=5.0)
    assert old.frozen is None

    settings = ctx.subject_settings(old)

    assert settings.generation.lora_strength == 0.55
    stored = store.subject(old.id)
    assert stored.frozen is not None and SubjectSettings.thaw(stored.frozen) == settings
    assert stored.updated_at == 5.0  # bookkeeping, not news about the subject
    (folder / "subject.toml").write_text("[generation]\nlora_strength = 0.3\n")
    later = _context(tmp_path, store).subject_settings(old)  # another pass, stale row
    assert later.generation.lora_strength == 0.55


def test_unreadable_frozen_settings_are_an_error_naming_the_subject(tmp_path: Path) -> None:
    store = closed_after_test(SqliteStore(tmp_path / "state.db"))
    row = store.add_version("test", "alice", "fp", "subject", state=VALIDATED, now=0,
                            frozen='{"format": 99}')

    with pytest.raises(StoreError) as caught:
        _context(tmp_path, store).subject_settings(row)

    message = str(caught.value)
    assert message.startswith("alice (version 1): frozen settings cannot be read: not settings")
    assert "restore it, or upgrade lora-pipeline" in message


def test_frozen_settings_survive_the_store_word_for_word(tmp_path: Path) -> None:
    prompt = '{instance_prompt}, like https://example.com/ref?id=7&q=\\"caf\\u00e9\\" ok'
    job_file = write_job(tmp_path, prompts=1)
    job_file.write_text(job_file.read_text().replace(
        'prompts = ["{instance_prompt}, take 1"]', f'prompts = ["{prompt}"]'))
    job = load_job(job_file)
    create_samples(tmp_path / "inbox", count=1, images_per_subject=3, include_bad=False)
    store = closed_after_test(SqliteStore(tmp_path / "state.db"))

    [row] = intake(job, store, ManualClock()).new_versions

    assert row.frozen is not None
    frozen = SubjectSettings.thaw(row.frozen)
    assert frozen == job.subject_settings(tmp_path / "inbox" / "alice")
    assert frozen.prompts[0].text.endswith('ref?id=7&q="café" ok')
