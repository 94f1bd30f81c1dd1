"""Intake: what it looks at again, what it records, and the settings it freezes.

Time is a :class:`ManualClock`; every file's time is set from it (``os.utime``), so what
intake compares (the folder's newest change, the scan's time) is decided by the test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.clock import ManualClock
from pipeline.engine.stages import intake as intake_module
from pipeline.engine.stages.intake import HELD_BACK_NOTE, IntakeResult, intake
from pipeline.inputs.dataset import DatasetReport
from pipeline.jobfile.loading import JobConfig, SubjectSettings, load_job
from pipeline.store.protocol import SubjectRow
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import DONE, VALIDATED
from tests.conftest import closed_after_test, force_state, write_job
from tests.pictures import picture_bytes


def png(seed: int) -> bytes:
    """A sharp picture whose content is unique per seed (a flat one is refused as blurry)."""
    return picture_bytes("PNG", seed=seed)


def stamp(path: Path, at: float) -> None:
    os.utime(path, (at, at))


class Inbox:
    """A job, its store and a clock; photos land half a minute after the last pass, the
    next pass comes a minute and a half later."""

    def __init__(self, tmp_path: Path, extra: str = "") -> None:
        self.tmp_path = tmp_path
        self.job = self.load(extra)
        self.store = closed_after_test(SqliteStore(tmp_path / "state.db"))
        self.clock = ManualClock()

    def load(self, extra: str = "") -> JobConfig:
        return load_job(write_job(self.tmp_path, extra=extra, prompts=1))

    def photos(self, name: str, *seeds: int, subject_toml: str | None = None) -> Path:
        self.clock.advance(30)
        folder = self.job.job.inbox / name
        folder.mkdir(exist_ok=True)
        written = [folder / f"photo{seed:02d}.png" for seed in seeds]
        for path, seed in zip(written, seeds, strict=True):
            path.write_bytes(png(seed))
        if subject_toml is not None:
            written.append(folder / "subject.toml")
            written[-1].write_text(subject_toml)
        for path in [*written, folder]:
            stamp(path, self.clock.now())
        return folder

    def run(self, job: JobConfig | None = None) -> IntakeResult:
        self.clock.advance(90)
        return intake(job or self.job, self.store, self.clock)

    def latest(self, name: str = "alice") -> SubjectRow:
        row = self.store.latest(self.job.job.name, name)
        assert row is not None
        return row


def counting_validation(monkeypatch: pytest.MonkeyPatch,
                        during: Callable[[Path], None] | None = None) -> list[Path]:
    """Count intake's calls of validate_subject; ``during(folder)`` runs after each one, as
    if it happened while the folder was being validated."""
    calls: list[Path] = []
    real = intake_module.validate_subject

    def validate(folder: Path, **kwargs: Any) -> DatasetReport:
        calls.append(folder)
        report = real(folder, **kwargs)
        if during is not None:
            during(folder)
        return report

    monkeypatch.setattr(intake_module, "validate_subject", validate)
    return calls


# --- what intake looks at again ---------------------------------------------------------------


def test_a_photo_added_while_its_folder_is_validated_is_taken_in_on_the_next_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = Inbox(tmp_path)
    inbox.photos("alice", 1, 2, 3)

    def add_a_photo(folder: Path) -> None:
        if (folder / "late.png").exists():
            return
        inbox.clock.advance(30)  # validating takes a while; the photo lands meanwhile
        (folder / "late.png").write_bytes(png(4))
        landed = inbox.clock.now() - 10
        stamp(folder / "late.png", landed)
        stamp(folder, landed)

    calls = counting_validation(monkeypatch, during=add_a_photo)
    [first] = inbox.run().new_versions
    assert (first.version, first.image_count) == (1, 3)  # validated before the photo came

    [second] = inbox.run().new_versions

    assert (second.version, second.image_count, second.state) == (2, 4, VALIDATED)
    assert inbox.run().new_versions == [] and len(calls) == 2  # then left alone


def test_a_folder_held_back_by_retrain_on_change_is_not_validated_again_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = Inbox(tmp_path)
    inbox.photos("alice", 1, 2, 3)
    [trained] = inbox.run().new_versions
    force_state(inbox.store, trained.id, now=inbox.clock.now(), state=DONE)
    calls = counting_validation(monkeypatch)

    inbox.photos("alice", 4)  # changed after the training was paid for
    assert inbox.run().held_back == ["alice"] and len(calls) == 1
    assert inbox.latest().warning_list.count(HELD_BACK_NOTE) == 1

    for _ in range(3):  # nothing changed since: not decoded again, nothing recorded
        assert inbox.run() == IntakeResult()
    assert len(calls) == 1

    inbox.photos("alice", 5)  # a real change is looked at, and still said once
    assert inbox.run().held_back == ["alice"] and len(calls) == 2
    assert inbox.latest().id == trained.id
    assert inbox.latest().warning_list.count(HELD_BACK_NOTE) == 1
    assert inbox.latest().updated_at < inbox.clock.now()  # looking is not news

    allowed = inbox.load("retrain_on_change = true")  # the job lifts the hold, folder as is
    [again] = inbox.run(allowed).new_versions
    assert (again.version, again.image_count) == (2, 5) and len(calls) == 3


def test_photos_back_to_the_trained_ones_drop_the_note(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path)
    folder = inbox.photos("alice", 1, 2, 3)
    [trained] = inbox.run().new_versions
    force_state(inbox.store, trained.id, now=inbox.clock.now(), state=DONE)
    inbox.photos("alice", 4)
    inbox.run()
    assert HELD_BACK_NOTE in inbox.latest().warning_list

    (folder / "photo04.png").unlink()
    inbox.photos("alice")

    assert inbox.run() == IntakeResult()
    assert HELD_BACK_NOTE not in inbox.latest().warning_list
    assert inbox.latest().warning_list == trained.warning_list


def test_a_photo_dated_in_the_future_hides_no_later_change(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path)
    folder = inbox.photos("alice", 1, 2, 3)
    stamp(folder / "photo01.png", inbox.clock.now() + 10 * 365 * 86400)  # a camera's clock
    [first] = inbox.run().new_versions

    inbox.photos("alice", 4)

    [second] = inbox.run().new_versions
    assert (first.image_count, second.image_count) == (3, 4)


# --- the job's min_images_warning -------------------------------------------------------------


def test_min_images_warning_of_the_job_decides_the_warning(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path, extra="min_images_warning = 3")
    inbox.photos("alice", 1, 2, 3)
    inbox.photos("bob", 4, 5)

    inbox.run()

    assert inbox.latest("alice").warning_list == []
    [warning] = inbox.latest("bob").warning_list
    assert warning.startswith("only 2 usable images in bob/: at least 3 are recommended")
    assert "lower min_images_warning in the job file" in warning


# --- the settings frozen with each version ----------------------------------------------------


SUBJECT_TOML = """
class_word = "woman"
extra_prompts = ["{instance_prompt}, from subject.toml"]
[generation]
lora_strength = 0.55
"""


def test_each_version_is_recorded_with_its_settings_frozen(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path)
    folder = inbox.photos("alice", 1, 2, 3, subject_toml=SUBJECT_TOML)

    [row] = inbox.run().new_versions

    assert row.frozen is not None
    frozen = SubjectSettings.thaw(row.frozen)
    assert frozen == inbox.job.subject_settings(folder)
    assert frozen.generation.lora_strength == 0.55
    assert [p.text for p in frozen.prompts] == [
        "a close photo of ohwx woman, take 1", "a close photo of ohwx woman, from subject.toml",
    ]
    data = json.loads(row.frozen)
    assert data["training"]["kind"] == "subject" and data["prompts"][1]["slug"].startswith("02-")


def test_a_new_version_freezes_the_settings_of_its_time(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path, extra="retrain_on_change = true")
    inbox.photos("alice", 1, 2, 3, subject_toml=SUBJECT_TOML)
    [first] = inbox.run().new_versions
    force_state(inbox.store, first.id, now=inbox.clock.now(), state=DONE)

    inbox.photos("alice", 4, subject_toml='class_word = "dancer"\n')
    [second] = inbox.run().new_versions

    assert first.frozen is not None and second.frozen is not None
    old, new = SubjectSettings.thaw(first.frozen), SubjectSettings.thaw(second.frozen)
    assert (old.training.class_word, new.training.class_word) == ("woman", "dancer")
    assert (old.generation.lora_strength, new.generation.lora_strength) == (0.55, 0.8)
    assert inbox.store.subject(first.id).frozen == first.frozen  # the old one stays as it was


async def test_a_folder_whose_check_fails_unexpectedly_is_logged_and_the_others_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import structlog

    inbox = Inbox(tmp_path)
    inbox.photos("alice", 1, 2)
    inbox.photos("bob", 3, 4)
    real = intake_module.validate_subject
    broken = {"alice"}

    def validate(folder: Path, **kwargs: Any) -> DatasetReport:
        if folder.name in broken:
            raise RuntimeError("a decoder bug")
        return real(folder, **kwargs)

    monkeypatch.setattr(intake_module, "validate_subject", validate)
    inbox.clock.advance(90)
    with structlog.testing.capture_logs() as events:
        taken = await intake_module.intake_off_loop(
            inbox.job, inbox.store, inbox.clock, stopping=asyncio.Event())

    assert [row.name for row in taken.new_versions] == ["bob"]
    (failed,) = [e for e in events if e["event"] == "intake.check_failed"]
    assert failed["subject"] == "alice" and "a decoder bug" in failed["error"]
    assert failed["log_level"] == "error"
    broken.clear()
    assert [row.name for row in inbox.run().new_versions] == ["alice"]  # looked at again
