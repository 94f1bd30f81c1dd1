"""img2img prompts through the whole pipeline, against the emulator on a real loopback port:
counted apart by the service, collected and named as txt2img's pictures, with sidecars that
say where they came from, visibly drawn from their init image; the init image kept with the
version; and the same never-pay-twice rules as txt2img."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.api import ApiClient
from pipeline.emulator import EmulatorHandle
from pipeline.engine.control import regenerate_subject
from pipeline.engine.runner import Runner
from pipeline.jobfile.loading import load_job
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import DONE, GEN_FAILED, GEN_PENDING, GEN_SUBMITTED, TRAINED
from pipeline.views.summary import EXIT_OK
from tests.conftest import (
    closed_after_test,
    fast_settings,
    force_generation_state,
    force_state,
    write_job,
)
from tests.engine.folders import write_subjects
from tests.engine.img2img import (
    BLUE,
    HALVES,
    YELLOW,
    distance,
    mean_colour,
    write_img2img_job,
)

SKETCH_TOML = """
extra_prompts = [{ prompt = "{subject} from the sketch", init_image = "refs/sketch.png", strength = 0.3 }]
"""


def _job(tmp_path: Path, subjects: int = 2, **job_args: Any) -> Any:
    job = load_job(write_img2img_job(tmp_path, **job_args))
    write_subjects(tmp_path / "inbox", subjects, 3)
    return job


async def _run(job: Any, emulator: EmulatorHandle, tmp_path: Path, max_wait: float = 20,
               **settings: Any) -> Any:
    config = fast_settings(emulator.base_url, tmp_path / "state", **settings)
    return await Runner(job, config).run_once(max_wait=max_wait)


def _store(tmp_path: Path) -> SqliteStore:
    return closed_after_test(SqliteStore(tmp_path / "state" / "state.db"))


def _created(emulator: EmulatorHandle) -> dict[str, int]:
    return dict(emulator.emulator.counters_snapshot()["generations_created"])


async def test_a_job_mixing_txt2img_and_img2img_prompts(tmp_path: Path, emulator) -> None:
    job = _job(tmp_path, image_num=2)
    result = await _run(job, emulator, tmp_path)

    assert result.exit_code == EXIT_OK
    assert [(s.name, s.state) for s in result.subjects] == [("alice", DONE), ("bob", DONE)]
    assert _created(emulator) == {"total": 4, "txt2img": 2, "img2img": 2}
    requests = emulator.emulator.counters_snapshot()["requests"]
    assert requests["POST /v3/async/img2img"] == 2
    for name in ("alice", "bob"):
        folder = tmp_path / "outbox" / "test" / name
        painted = sorted((folder / "02-as-an-oil-painting").iterdir())
        # named as txt2img's pictures are, each with its sidecar
        assert [p.name for p in painted] == [
            f"{name}-02-as-an-oil-painting-1.json", f"{name}-02-as-an-oil-painting-1.png",
            f"{name}-02-as-an-oil-painting-2.json", f"{name}-02-as-an-oil-painting-2.png"]
        sidecar = json.loads(painted[0].read_text())
        plain = json.loads((folder / "01-take-1" / f"{name}-01-take-1-1.json").read_text())
        assert sidecar["endpoint"] == "img2img" and plain["endpoint"] == "txt2img"
        assert sidecar["init_image"] == {"file": "halves.png", "strength": 0.6,
                                         "sha256": hashlib.sha256(HALVES).hexdigest()}
        assert plain["init_image"] is None
        assert sidecar["lora"] == plain["lora"]  # the subject's own LoRA, as for txt2img
        assert sidecar["prompt"] == "a close photo of ohwx person as an oil painting"
        with Image.open(painted[1]) as picture:
            assert picture.size == (512, 512)
            # Beside the text, the portrait and the strip: the init image, lightly tinted.
            left = mean_colour(picture, (8, 200, 120, 400))
            right = mean_colour(picture, (392, 200, 504, 400))
        with Image.open(folder / "01-take-1" / f"{name}-01-take-1-1.png") as txt2img:
            not_drawn_over = mean_colour(txt2img, (392, 200, 504, 400))
        assert distance(left, BLUE) < 110 and distance(right, YELLOW) < 110, (left, right)
        assert distance(not_drawn_over, YELLOW) > 110
    [sent] = {g.spec.strength for g in emulator.emulator.generations.values()
              if g.spec.kind == "img2img"}
    assert sent == 0.6


async def test_a_subject_tomls_init_image_and_the_jobs_are_kept_when_the_files_go(
    tmp_path: Path, emulator
) -> None:
    """Kept in the state when the subject is taken in: the folder and the job's picture
    removed after training change nothing for the version's img2img prompts."""
    job = _job(tmp_path, subjects=1)
    folder = tmp_path / "inbox" / "alice"
    (folder / "subject.toml").write_text(SKETCH_TOML)
    (folder / "refs").mkdir()
    shutil.copy(tmp_path / "refs" / "halves.png", folder / "refs" / "sketch.png")
    first = await _run(job, emulator, tmp_path)
    assert [(s.name, s.state) for s in first.subjects] == [("alice", DONE)]
    assert _created(emulator) == {"total": 3, "txt2img": 1, "img2img": 2}
    store = _store(tmp_path)
    subject = store.latest("test", "alice")
    assert subject is not None
    for generation in store.generations(subject.id):
        force_generation_state(store, generation.id, now=0, state=GEN_PENDING, task_id=None,
                               image_count=0)
    force_state(store, subject.id, now=0, state=TRAINED)
    shutil.rmtree(tmp_path / "outbox" / "test" / "alice")
    shutil.rmtree(folder)
    (tmp_path / "refs" / "halves.png").unlink()

    again = await _run(job, emulator, tmp_path)

    assert [(s.name, s.state) for s in again.subjects] == [("alice", DONE)]
    assert _created(emulator) == {"total": 6, "txt2img": 2, "img2img": 4}
    sidecars = sorted((tmp_path / "outbox" / "test" / "alice").glob("03-*/*.json"))
    [from_sketch] = [json.loads(path.read_text()) for path in sidecars]
    assert from_sketch["init_image"]["file"] == "sketch.png"
    assert from_sketch["init_image"]["strength"] == 0.3
    assert store.integrity_problems() == []


async def test_a_bad_subject_init_image_is_refused_at_intake_and_nothing_is_paid(
    tmp_path: Path, emulator
) -> None:
    job = _job(tmp_path, subjects=1)
    folder = tmp_path / "inbox" / "alice"
    (folder / "subject.toml").write_text(SKETCH_TOML)
    (folder / "refs").mkdir()
    (folder / "refs" / "sketch.png").write_bytes(b"GIF89a" + b"\0" * 64)
    result = await _run(job, emulator, tmp_path)
    [subject] = result.subjects
    assert subject.state == "rejected"
    assert "refs/sketch.png is a GIF image, not png/jpeg/webp" in subject.error
    counters = emulator.emulator.counters_snapshot()
    assert counters["uploads"] == 0 and counters["trainings_created"]["total"] == 0


async def test_an_img2img_create_in_flight_when_the_pass_stops_lands_and_is_never_paid_again(
    tmp_path: Path, emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--max-wait ends the pass while the answer to an img2img POST is on its way: it is
    still recorded, and the next pass pays for nothing again."""
    job = _job(tmp_path, subjects=1)
    real = ApiClient.img2img
    answered = asyncio.Event()

    async def slow_answer(client: ApiClient, *args: Any, **kwargs: Any) -> str:
        task_id = await real(client, *args, **kwargs)  # the service has created the task
        await asyncio.sleep(0.3)  # ... and the answer arrives after the pass was stopped
        answered.set()
        return task_id

    monkeypatch.setattr(ApiClient, "img2img", slow_answer)

    async def stop_when_sent(runner: Runner) -> None:
        while _created(emulator).get("img2img", 0) == 0:
            await asyncio.sleep(0.01)
        runner.stop()

    runner = Runner(job, fast_settings(emulator.base_url, tmp_path / "state"))
    stopper = asyncio.create_task(stop_when_sent(runner))
    await runner.run_once(max_wait=20)
    await stopper
    assert answered.is_set()
    store = _store(tmp_path)
    subject = store.latest("test", "alice")
    assert subject is not None
    [painted] = [g for g in store.generations(subject.id) if g.endpoint == "img2img"]
    assert painted.state == GEN_SUBMITTED and painted.task_id  # recorded, not lost
    monkeypatch.setattr(ApiClient, "img2img", real)
    result = await _run(job, emulator, tmp_path)
    assert result.subjects[0].state == DONE
    assert _created(emulator)["img2img"] == 1


@pytest.mark.parametrize("emulator_config", [{"fault_5xx": 1.0,
                                               "fault_routes": ["/v3/async/img2img"]}],
                         indirect=True)
async def test_5xx_answers_to_an_img2img_create_are_sent_again_a_bounded_number_of_times(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    job = _job(tmp_path, subjects=1)
    result = await _run(job, emulator, tmp_path)
    store = _store(tmp_path)
    subject = store.latest("test", "alice")
    assert subject is not None
    painted, = [g for g in store.generations(subject.id) if g.endpoint == "img2img"]
    assert painted.state == GEN_FAILED and "`retry` asks again" in (painted.error or "")
    assert painted.error.startswith("img2img")
    posts = emulator.emulator.counters_snapshot()["requests"]["POST /v3/async/img2img"]
    assert posts <= 5 + 3  # its tries, and at most 3 re-sends of an unknown outcome
    assert result.subjects[0].state == DONE and "1 of 2 prompts failed" in result.subjects[0].error


async def test_an_img2img_prompt_added_to_the_job_is_generated_on_request(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    job = load_job(write_job(tmp_path, prompts=1))
    write_subjects(tmp_path / "inbox", 1, 3)
    await _run(job, emulator, tmp_path)
    grown = load_job(write_img2img_job(tmp_path))  # the same prompt, and an img2img one
    store = _store(tmp_path)
    outcome = regenerate_subject(store, grown, "alice", prompts=[], new=True, now=1)
    assert outcome == "alice: 1 prompt(s) will be generated (1 new)"
    result = await _run(grown, emulator, tmp_path)
    assert result.subjects[0].state == DONE
    assert _created(emulator) == {"total": 2, "txt2img": 1, "img2img": 1}
    subject = store.latest("test", "alice")
    assert subject is not None
    assert [(g.slug, g.endpoint) for g in store.generations(subject.id)] == [
        ("01-take-1", "txt2img"), ("02-as-an-oil-painting", "img2img")]
    assert store.integrity_problems() == []
