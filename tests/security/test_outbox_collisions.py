"""The outbox: no folder name can make two subjects share a place, a stranger's file at a
result's place is never taken for the result, and a link planted there is never followed."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from pipeline.cli.samples import create_samples
from pipeline.emulator import EmulatorHandle
from pipeline.engine.outbox import SubjectOutbox, safe_stem
from pipeline.engine.runner import Runner
from pipeline.errors import UnsafePath
from pipeline.jobfile.loading import load_job
from pipeline.store.states import DONE
from tests.conftest import fast_settings, write_job


async def _run(job_file: Path, emulator: EmulatorHandle, root: Path):  # type: ignore[no-untyped-def]
    settings = fast_settings(emulator.base_url, root / "state")
    return await Runner(load_job(job_file), settings).run_once(max_wait=15)


async def test_a_folder_named_like_a_version_never_shares_its_place(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    job = write_job(tmp_path, prompts=1, extra="retrain_on_change = true")
    create_samples(tmp_path / "inbox", count=1, images_per_subject=2, include_bad=False)
    alice = tmp_path / "inbox" / "alice"
    shutil.copytree(alice, tmp_path / "inbox" / "alice-v2")
    for photo in (tmp_path / "inbox" / "alice-v2").iterdir():
        Image.open(photo).rotate(90).save(photo)  # another person's photos
    first = await _run(job, emulator, tmp_path)
    assert [(s.name, s.version, s.state) for s in first.subjects] == [
        ("alice", 1, DONE), ("alice-v2", 1, DONE)]

    photo = next(alice.iterdir())
    Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photo)
    second = await _run(job, emulator, tmp_path)
    assert [(s.name, s.version, s.state) for s in second.subjects] == [
        ("alice", 2, DONE), ("alice-v2", 1, DONE)]

    root = tmp_path / "outbox" / "test"
    loras = sorted(str(p.relative_to(root)) for p in root.rglob("*.safetensors"))
    assert loras == ["alice-v2/alice-v2.safetensors", "alice/alice.safetensors",
                     "alice/v2/alice@v2.safetensors"]
    names = [p.name for p in root.rglob("*.png")]
    assert len(names) == len(set(names)) == 3  # unique even when gathered in one folder


async def test_a_strangers_file_at_a_results_place_is_replaced(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    job = write_job(tmp_path, prompts=1)
    create_samples(tmp_path / "inbox", count=1, images_per_subject=2, include_bad=False)
    settings = fast_settings(emulator.base_url, tmp_path / "state")
    await Runner(load_job(job), settings).run_once(max_wait=0)  # the job's state exists
    place = SubjectOutbox(tmp_path / "outbox" / "test", "alice", 1)
    planted = place.path("01-take-1", place.picture_name("01-take-1", 1, "png"))
    planted.write_bytes(b"not the picture that was paid for")
    planted.with_suffix(".json").write_text('{"generation_task_id": "somebody-else"}')
    result = await _run(job, emulator, tmp_path)
    assert result.subjects[0].state == DONE
    assert planted.read_bytes().startswith(b"\x89PNG")
    assert emulator.emulator.counters_snapshot()["images_downloaded"] == 1


async def test_a_link_planted_in_the_outbox_is_not_followed(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    job = write_job(tmp_path, prompts=1)
    create_samples(tmp_path / "inbox", count=1, images_per_subject=2, include_bad=False)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "outbox" / "test").mkdir(parents=True)
    (tmp_path / "outbox" / "test" / "alice").symlink_to(outside)
    result = await _run(job, emulator, tmp_path)
    subject = result.subjects[0]
    assert list(outside.iterdir()) == []
    assert "is a link or a file where the pipeline keeps a folder" in (
        " ".join(subject.warnings) + (subject.error or ""))


def test_names_are_made_by_the_pipeline() -> None:
    assert safe_stem("../../etc/passwd") == "etc-passwd"
    assert safe_stem("Zoë Müller (2024)") == "Zoë-Müller-2024"
    assert safe_stem("...") == "subject"
    place = SubjectOutbox(Path("/out/job"), "alice", 3)
    assert place.folder == Path("/out/job/alice/v3")
    assert place.lora_name() == "alice@v3.safetensors"
    for bad in ("..", ".", "", "a/b"):
        try:
            SubjectOutbox(Path("/out/job"), bad, 1)
        except UnsafePath:
            continue
        raise AssertionError(f"{bad!r} was accepted as a subject folder")
