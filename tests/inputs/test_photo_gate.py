"""The photo gate over a whole folder, on real photographs: what a new user drops in."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from pipeline.inputs import photo_files
from pipeline.inputs.dataset import DatasetReport, validate_subject
from pipeline.inputs.photo_cache import PhotoCache
from pipeline.inputs.photo_checks import PhotoMeasures, PhotoSettings
from pipeline.inputs.photo_formats import upload_bytes
from tests.inputs import photos


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "inbox" / "alice"
    path.mkdir(parents=True)
    return path


def person(folder: Path, **settings: object) -> DatasetReport:
    return validate_subject(folder, class_word="person", photos=PhotoSettings(**settings))  # type: ignore[arg-type]


def write_portraits(folder: Path) -> dict[str, Image.Image]:
    portraits = photos.distinct_portraits()
    for name, image in portraits.items():
        (folder / f"{name}.jpg").write_bytes(photos.jpeg(image))
    return portraits


def verdicts(report: DatasetReport) -> dict[str, str]:
    return {photo.name: photo.verdict for photo in report.photos}


def reason(report: DatasetReport, name: str) -> str:
    return {r.name: r.reason for r in report.rejected_files}[name]


def test_the_folder_a_new_user_drops_in_gets_the_verdicts_a_careful_person_gives(
    folder: Path,
) -> None:
    portraits = write_portraits(folder)
    plain = portraits["plain"]
    (folder / "cat.jpg").write_bytes(photos.jpeg(photos.chelsea()))
    (folder / "pair.jpg").write_bytes(photos.jpeg(photos.side_by_side(plain, plain.rotate(3))))
    (folder / "blurred.jpg").write_bytes(photos.jpeg(photos.blurred(portraits["kitchen"], 4)))
    (folder / "moving.webp").write_bytes(photos.animated_webp(portraits["sofa"]))
    (folder / "plain_q70.jpg").write_bytes(photos.jpeg(plain, quality=70))
    (folder / "mirror_crop.jpg").write_bytes(photos.jpeg(portraits["mirror"].crop((4, 4, 512, 512))))
    (folder / "grey_burst.jpg").write_bytes(photos.jpeg(portraits["grey"].rotate(1)))
    os.symlink("plain.jpg", folder / "plain_link.jpg")
    (folder / "notes.txt").write_text("shot on the beach", encoding="utf-8")
    (folder / "Thumbs.db").write_bytes(b"\x00" * 64)

    report = person(folder)

    assert report.ok
    used = {image.name for image in report.accepted}
    # One of each group of near-duplicates is used, the sharpest; the other names it.
    for original, twin in (("plain.jpg", "plain_q70.jpg"), ("mirror.jpg", "mirror_crop.jpg"),
                           ("grey.jpg", "grey_burst.jpg")):
        kept, left_out = (original, twin) if original in used else (twin, original)
        assert kept in used and left_out not in used
        assert reason(report, left_out).startswith(f"{left_out} is a near-duplicate of {kept}")
    assert len(used) == 6 and verdicts(report)["plain_link.jpg"] == "refused"
    assert reason(report, "cat.jpg").startswith("cat.jpg: no face found")
    assert reason(report, "pair.jpg").startswith("pair.jpg: 2 faces found")
    assert reason(report, "blurred.jpg").startswith("blurred.jpg is blurry")
    assert reason(report, "moving.webp").startswith("moving.webp is animated (2 frames)")
    assert reason(report, "plain_link.jpg") == (
        "plain_link.jpg is a link to plain.jpg in the same folder: plain.jpg is used once; "
        "delete the link"
    )
    assert report.ignored == (
        "Thumbs.db (a file the system leaves behind)",
        "notes.txt (text, and no photo is named notes for it to caption)",
    )
    assert report.good_face_photos == 6 and report.face_photos_needed == 10
    assert any(w.startswith("only 6 good face photos in alice/") for w in report.warnings)
    refused = {r.name: r for r in report.rejected_files}
    assert refused["cat.jpg"].thumbnail is not None
    with Image.open(io.BytesIO(refused["cat.jpg"].thumbnail)) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == 160
    photo = {p.name: p for p in report.photos}["sofa.jpg"]
    assert photo.verdict == "ok" and photo.faces == 1 and photo.sharpness and photo.sharpness > 300


def test_phone_photos_are_taken_upright_converted_and_stripped(folder: Path) -> None:
    portraits = write_portraits(folder)
    (folder / "close.jpg").unlink()
    (folder / "grey.jpg").unlink()
    upside_down_cat = photos.chelsea().rotate(180)
    tall = photos.on_background(upside_down_cat, (260, 200), 0.6).crop((200, 0, 725, 700))
    (folder / "IMG_0001.jpg").write_bytes(photos.sideways_jpeg(tall))
    (folder / "IMG_0002.HEIC").write_bytes(photos.encode(portraits["sofa"], "HEIF", quality=90))
    (folder / "cmyk.jpg").write_bytes(photos.cmyk_jpeg(portraits["grey"]))
    (folder / "deep.png").write_bytes(photos.png16(portraits["kitchen"].resize((640, 500))))
    (folder / "sofa.jpg").unlink()
    (folder / "kitchen.jpg").unlink()

    report = person(folder)

    images = {image.name: image for image in report.accepted}
    assert set(images) == {"plain.jpg", "mirror.jpg", "IMG_0001.jpg", "IMG_0002.HEIC",
                           "cmyk.jpg", "deep.png"}, report.rejected_files
    rotated = images["IMG_0001.jpg"]
    assert (rotated.width, rotated.height) == (525, 700)  # as shown, not as stored
    assert rotated.changes == ("rotated upright (EXIF orientation 6)", "metadata removed")
    assert images["IMG_0002.HEIC"].format == "jpeg"
    assert images["IMG_0002.HEIC"].changes[0] == "HEIC to jpeg"
    assert images["cmyk.jpg"].changes == ("CMYK colours to RGB", "metadata removed")
    assert images["deep.png"].changes[0] == "16 bits per channel to 8"
    assert images["plain.jpg"].changes == ()

    sent = upload_bytes((folder / "IMG_0001.jpg").read_bytes())
    with Image.open(io.BytesIO(sent.data)) as upright:
        assert upright.size == (525, 700)
        assert not upright.getexif()  # GPS and the orientation tag gone
    heic = upload_bytes((folder / "IMG_0002.HEIC").read_bytes())
    assert heic.format == "jpeg" and heic.data.startswith(b"\xff\xd8\xff")
    assert upload_bytes((folder / "plain.jpg").read_bytes()).data == (folder / "plain.jpg").read_bytes()


def test_animated_photos_can_give_their_first_frame(folder: Path) -> None:
    portraits = write_portraits(folder)
    (folder / "plain.jpg").unlink()
    (folder / "moving.webp").write_bytes(photos.animated_webp(portraits["plain"]))

    report = person(folder, animated="first_frame")

    (image,) = [i for i in report.accepted if i.name == "moving.webp"]
    assert image.changes[0] == "animated: first of 2 frames"
    assert any("only its first frame is used" in w for w in report.warnings)
    with Image.open(io.BytesIO(upload_bytes((folder / "moving.webp").read_bytes()).data)) as sent:
        assert getattr(sent, "n_frames", 1) == 1


def test_too_few_good_face_photos_hold_the_subject_back_when_the_job_says_so(
    folder: Path,
) -> None:
    write_portraits(folder)

    warned = person(folder)
    held = person(folder, too_few_face_photos="hold")
    enough = person(folder, min_face_photos=6, too_few_face_photos="hold")

    assert warned.ok
    assert not held.ok and held.error is not None
    assert held.error.startswith("only 6 good face photos in alice/")
    assert 'too_few_face_photos = "hold"' in held.error
    assert enough.ok and not any("good face photos" in w for w in enough.warnings)


def test_faces_are_not_looked_for_in_an_object_or_when_turned_off(folder: Path) -> None:
    (folder / "cat.jpg").write_bytes(photos.jpeg(photos.chelsea()))
    (folder / "cup.jpg").write_bytes(photos.jpeg(photos.upscaled(photos.coffee(), (640, 512))))

    for report in (validate_subject(folder, class_word="cat"), person(folder, faces="off")):
        assert {image.name for image in report.accepted} == {"cat.jpg", "cup.jpg"}
        assert report.good_face_photos is None
        assert all(photo.faces is None for photo in report.photos)


def test_each_photo_is_measured_once_and_judged_again_under_new_settings(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_portraits(folder)
    measured: list[int] = []
    original = photo_files.measure_photo

    def counting(fp: io.BytesIO, *, find_faces: bool) -> PhotoMeasures:
        measured.append(1)
        return original(fp, find_faces=find_faces)

    monkeypatch.setattr(photo_files, "measure_photo", counting)
    with PhotoCache.open(tmp_path / "state" / "photo-checks.db") as cache:
        first = validate_subject(folder, class_word="person", cache=cache)
        strict = validate_subject(folder, class_word="person", cache=cache,
                                  photos=PhotoSettings(min_sharpness=2000, soft_sharpness=3000))
    assert len(measured) == 6
    assert len(first.accepted) == 6
    assert not strict.accepted and all("is blurry" in r.reason for r in strict.rejected_files)
    with PhotoCache.open(tmp_path / "state" / "photo-checks.db") as reopened:
        again = validate_subject(folder, class_word="person", cache=reopened)
    assert len(measured) == 6 and again.fingerprint == first.fingerprint


def test_a_damaged_or_foreign_cache_is_a_miss_not_a_failure(folder: Path, tmp_path: Path) -> None:
    write_portraits(folder)
    path = tmp_path / "photo-checks.db"
    path.write_bytes(b"not a database at all" * 100)
    with PhotoCache.open(path) as cache:
        report = validate_subject(folder, class_word="person", cache=cache)
    assert len(report.accepted) == 6
    link = tmp_path / "linked.db"
    link.symlink_to(tmp_path / "elsewhere.db")
    with PhotoCache.open(link) as cache:
        assert len(validate_subject(folder, class_word="person", cache=cache).accepted) == 6
    assert not (tmp_path / "elsewhere.db").exists()
