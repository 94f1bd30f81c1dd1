"""A person's folder through the photo gate to the emulator: what is sent, and as what.

The photos are real ones (scikit-image's astronaut, one face; its cat, none), staged on
backgrounds of their own so that no two are near-duplicates; the job looks for faces.
"""

from __future__ import annotations

import hashlib
import io
import json
from functools import cache
from pathlib import Path
from typing import BinaryIO

import pytest
from PIL import Image

from pipeline.api import ApiClient
from pipeline.emulator import EmulatorHandle
from pipeline.engine.runner import Runner
from pipeline.inputs.dataset import validate_subject
from pipeline.jobfile.loading import load_job
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import DONE
from tests.conftest import closed_after_test, fast_settings, write_job
from tests.inputs import photos
from tests.pictures import picture

JOB = """
[job]
name = "test"
inbox = "inbox"
outbox = "outbox"
settle_seconds = 0

[generation]
image_num = 1
prompts = ["{instance_prompt}, take 1"]
"""  # no [photos]: the defaults, so a person's photos must show one face

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def staged(seed: int, size: tuple[int, int], crop: tuple[int, int, int, int], *,
           scale: float = 1.0, flip: bool = False, turn: float = 0) -> Image.Image:
    """The astronaut cropped, scaled, mirrored or turned, standing on the bottom edge of a
    background of its own (:func:`tests.pictures.picture`)."""
    canvas = picture(seed, size)
    person = photos.astronaut().crop(crop)
    if flip:
        person = person.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if scale != 1.0:
        person = person.resize((round(person.width * scale), round(person.height * scale)),
                               Image.Resampling.LANCZOS)
    if turn:
        person = person.rotate(turn, resample=Image.Resampling.BICUBIC, expand=True,
                               fillcolor=(90, 120, 150))
    canvas.paste(person, ((size[0] - person.width) // 2, size[1] - person.height))
    return canvas


@cache
def accepted() -> dict[str, bytes]:
    return {
        "plain.jpg": photos.jpeg(plain()),  # no metadata, nothing to convert: sent as it is
        "phone.heic": photos.encode(
            staged(2, (640, 560), (80, 10, 400, 400), flip=True), "HEIF"),
        "sideways.jpg": photos.sideways_jpeg(
            staged(3, (540, 720), (110, 0, 380, 380), scale=1.5)),
        "turned.png": photos.encode(staged(4, (600, 600), (60, 0, 440, 460), turn=14), "PNG"),
    }


@cache
def refused() -> dict[str, bytes]:
    return {
        "cat.jpg": photos.jpeg(photos.chelsea()),  # no face
        "blurred.jpg": photos.jpeg(photos.blurred(
            staged(5, (600, 700), (120, 20, 360, 330), scale=1.6, flip=True), 4)),
        "reshot.jpg": photos.jpeg(photos.blurred(plain(), 0.7), quality=80),  # plain, softer
    }


def plain() -> Image.Image:
    return staged(1, (640, 640), (96, 0, 416, 420), scale=1.2)


CHANGES = {
    "plain.jpg": [],
    "phone.heic": ["HEIC to jpeg", "metadata removed"],
    "sideways.jpg": ["rotated upright (EXIF orientation 6)", "metadata removed"],
    "turned.png": [],
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The inbox's ``alice``, checked first the way intake will check it."""
    alice = tmp_path / "inbox" / "alice"
    alice.mkdir(parents=True)
    for name, data in {**accepted(), **refused()}.items():
        (alice / name).write_bytes(data)
    report = validate_subject(alice, class_word="person")
    assert sorted(image.name for image in report.accepted) == sorted(accepted())
    reasons = {r.name: r.reason for r in report.rejected_files}
    assert "no face found" in reasons["cat.jpg"]
    assert "is blurry" in reasons["blurred.jpg"]
    assert "is a near-duplicate of plain.jpg" in reasons["reshot.jpg"]
    assert {p.name: p.faces for p in report.photos if p.name in accepted()} == dict.fromkeys(
        accepted(), 1)
    return alice


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Every body the pipeline PUTs, by its sha256 (the emulator keeps only the digest)."""
    bodies: dict[str, bytes] = {}
    put_file = ApiClient.put_file

    async def keeping(client: ApiClient, url: str, source: Path | BinaryIO | bytes,
                      content_type: str) -> int:
        if isinstance(source, bytes):
            data = source
        else:
            data = source.read_bytes() if isinstance(source, Path) else _whole(source)
        bodies[hashlib.sha256(data).hexdigest()] = data
        return await put_file(client, url, source, content_type)

    monkeypatch.setattr(ApiClient, "put_file", keeping)
    return bodies


def _whole(source: BinaryIO) -> bytes:
    source.seek(0)
    data = source.read()
    source.seek(0)
    return data


async def test_a_person_s_accepted_photos_are_sent_converted_and_the_refused_never(
    tmp_path: Path, emulator: EmulatorHandle, folder: Path, sent: dict[str, bytes]
) -> None:
    job = load_job(write_job(tmp_path, JOB))
    result = await Runner(job, fast_settings(emulator.base_url, tmp_path / "state")).run_once(
        max_wait=20)

    [alice] = result.subjects
    assert alice.state == DONE and alice.images == len(accepted())
    assert sorted(r["file"] for r in alice.rejected_files) == sorted(refused())
    counters = emulator.emulator.counters_snapshot()
    assert counters["uploads"] == counters["upload_urls_issued"] == len(accepted())
    received = {a.sha256: a for a in emulator.emulator.assets.values() if a.uploaded}
    assert set(received) == set(sent)  # what was kept is what the emulator got
    files = {name: hashlib.sha256(data).hexdigest() for name, data in refused().items()}
    assert not set(files.values()) & set(received)  # the refused: never sent

    db = closed_after_test(SqliteStore(tmp_path / "state" / "state.db"))
    row = db.latest("test", "alice")
    assert row is not None
    by_name = {}
    for image in db.images(row.id):
        asset = emulator.emulator.assets[image.assets_id]
        by_name[image.name] = (asset, sent[asset.sha256])
    assert sorted(by_name) == sorted(accepted())

    asset, body = by_name["plain.jpg"]  # needing no change: the file's very bytes
    assert body == accepted()["plain.jpg"] and asset.extension == "jpeg"
    asset, body = by_name["turned.png"]
    assert body == accepted()["turned.png"] and asset.extension == "png"

    asset, body = by_name["phone.heic"]  # HEIC is sent as a JPEG
    assert body[:3] == b"\xff\xd8\xff" and asset.extension == "jpeg"
    assert (asset.width, asset.height) == (640, 560)

    asset, body = by_name["sideways.jpg"]  # turned upright, its GPS and orientation gone
    assert body[:3] == b"\xff\xd8\xff" and asset.extension == "jpeg"
    with Image.open(io.BytesIO(body)) as upright:
        assert upright.size == (540, 720) == (asset.width, asset.height)
        exif = upright.getexif()
        assert not exif.get_ifd(GPS_IFD) and exif.get(ORIENTATION, 1) == 1

    sidecar = tmp_path / "outbox" / "test" / "alice" / "alice.json"  # the LoRA's sidecar
    listed = json.loads(sidecar.read_text())["photos"]
    assert {p["file"]: p["changes"] for p in listed} == CHANGES
    assert {p["file"]: p["sent_as"] for p in listed} == {
        "plain.jpg": "jpeg", "phone.heic": "jpeg", "sideways.jpg": "jpeg", "turned.png": "png"}
    assert {p["file"]: p["sha256"] for p in listed} == {
        name: hashlib.sha256(data).hexdigest() for name, data in accepted().items()}
