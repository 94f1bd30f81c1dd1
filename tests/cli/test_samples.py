"""The demo's sample folders validate exactly as the demo tells the user they will."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli.samples import BAD_SUBJECT, TOO_MANY_SUBJECT, create_samples
from pipeline.errors import ConfigError
from pipeline.inputs.dataset import DatasetReport, validate_subject


@pytest.fixture(scope="module")
def sample_inbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    inbox = tmp_path_factory.mktemp("samples") / "inbox"
    create_samples(inbox)
    return inbox


@pytest.fixture(scope="module")
def reports(sample_inbox: Path) -> dict[str, DatasetReport]:
    return {
        folder.name: validate_subject(folder)
        for folder in sorted(sample_inbox.iterdir())
        if folder.is_dir()
    }


def test_creates_the_named_folders(tmp_path: Path) -> None:
    names = create_samples(tmp_path / "inbox", count=3)

    assert names == ["alice", "bob", "teapot", BAD_SUBJECT, TOO_MANY_SUBJECT]
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == sorted(names)


def test_good_subjects_are_ok_without_warnings(reports: dict[str, DatasetReport]) -> None:
    for name in ["alice", "bob", "teapot"]:
        report = reports[name]
        assert report.ok, report
        assert len(report.accepted) == 12
        assert report.rejected_files == () and report.warnings == ()
        assert {image.format for image in report.accepted} == {"png", "jpeg", "webp"}
        assert all((image.width, image.height) == (512, 512) for image in report.accepted)


def test_misleading_extensions_are_accepted(reports: dict[str, DatasetReport]) -> None:
    formats = {image.name: image.format for image in reports["alice"].accepted}

    assert formats["alice_02.jpg"] == "png"
    assert formats["alice_05.png"] == "webp"


def test_bad_subject_rejects_each_bad_file_for_its_reason(
    reports: dict[str, DatasetReport],
) -> None:
    report = reports[BAD_SUBJECT]
    reasons = {rejection.name: rejection.reason for rejection in report.rejected_files}

    assert set(reasons) == {
        "empty.jpg",
        "truncated.jpg",
        "animation.jpg",
        "notes.png",
        "IMG_0001.jpg",
        "panorama.png",
        f"{BAD_SUBJECT}_01_copy.png",
    }
    assert reasons["empty.jpg"].startswith("empty.jpg is empty (0 bytes)")
    assert reasons["truncated.jpg"].startswith("truncated.jpg is a damaged JPEG file")
    assert reasons["animation.jpg"].startswith("animation.jpg is a GIF image, not png/jpeg/webp")
    assert reasons["notes.png"].startswith("notes.png is a text file")
    assert reasons["IMG_0001.jpg"].startswith("IMG_0001.jpg is a HEIC/HEIF image")
    assert reasons["panorama.png"].startswith("panorama.png is 30000x20000 (600 megapixels)")
    assert f"exact copy of {BAD_SUBJECT}_01.png" in reasons[f"{BAD_SUBJECT}_01_copy.png"]
    assert not any(rejection.transient for rejection in report.rejected_files)


def test_bad_subject_still_trains_on_what_is_left_with_warnings(
    reports: dict[str, DatasetReport],
) -> None:
    report = reports[BAD_SUBJECT]

    assert report.ok
    assert sorted(image.name for image in report.accepted) == [
        f"{BAD_SUBJECT}_01.png",
        f"{BAD_SUBJECT}_02.jpg",
        f"{BAD_SUBJECT}_03.jpg",
        "tiny.png",
    ]
    assert len(report.warnings) == 3
    assert report.warnings[0].startswith(f"old/ is a folder inside {BAD_SUBJECT}/")
    assert report.warnings[1].startswith("tiny.png is 64x64, smaller than the 512x512")
    assert report.warnings[2].startswith("only 4 usable images")


def test_too_many_is_rejected_as_a_whole(reports: dict[str, DatasetReport]) -> None:
    report = reports[TOO_MANY_SUBJECT]

    assert not report.ok
    assert report.error is not None and report.error.startswith("51 images, at most 50")


def test_deterministic_for_a_seed(tmp_path: Path, sample_inbox: Path) -> None:
    create_samples(tmp_path / "same", seed=0, include_bad=False)
    create_samples(tmp_path / "other", seed=1, include_bad=False)

    for name in ["alice", "bob", "teapot"]:
        reference = validate_subject(sample_inbox / name).fingerprint
        assert validate_subject(tmp_path / "same" / name).fingerprint == reference
        assert validate_subject(tmp_path / "other" / name).fingerprint != reference
    assert (tmp_path / "same" / "alice" / "alice_01.png").read_bytes() == (
        sample_inbox / "alice" / "alice_01.png"
    ).read_bytes()


def test_count_images_and_without_bad(tmp_path: Path) -> None:
    names = create_samples(tmp_path, count=10, images_per_subject=2, include_bad=False)

    assert names[:3] == ["alice", "bob", "teapot"] and names[-1] == "subject_10"
    assert len(names) == 10
    assert all(len(list((tmp_path / name).iterdir())) == 2 for name in names)


def test_refuses_to_write_into_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "real_photo.jpg").write_bytes(b"precious")

    with pytest.raises(ConfigError, match="bob already exists and is not empty"):
        create_samples(tmp_path)

    assert (tmp_path / "bob" / "real_photo.jpg").read_bytes() == b"precious"
    assert not (tmp_path / "alice").exists()
    (tmp_path / "bob" / "real_photo.jpg").unlink()
    assert "bob" in create_samples(tmp_path)  # an empty folder is fine
