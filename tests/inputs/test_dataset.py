"""Dataset validation: every rejection reason, captions, limits and fingerprints."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from pipeline.inputs import photo_files
from pipeline.inputs.dataset import (
    DatasetReport,
    Rejection,
    detect_format,
    display_name,
    validate_subject,
)
from pipeline.inputs.photo_checks import PhotoMeasures, PhotoSettings
from tests.pictures import picture_bytes

# ----------------------------------------------------------------------------- helpers


def image_bytes(
    fmt: str = "PNG", size: tuple[int, int] = (512, 512), seed: int = 0, **save: object
) -> bytes:
    """A sharp picture whose content is unique per seed (see :mod:`tests.pictures`)."""
    return picture_bytes(fmt, size, seed, **save)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR chunk claiming width x height, and nothing else."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def subject(inbox: Path) -> Path:
    folder = inbox / "alice"
    folder.mkdir()
    return folder


def fill(folder: Path, count: int, *, size: tuple[int, int] = (512, 512), start: int = 0) -> None:
    for index in range(start, start + count):
        (folder / f"photo_{index:03d}.png").write_bytes(image_bytes(size=size, seed=index + 1))


def reasons(report: DatasetReport) -> dict[str, str]:
    return {rejection.name: rejection.reason for rejection in report.rejected_files}


# ----------------------------------------------------------------------------- acceptance


def test_accepts_png_jpeg_webp_with_facts_from_content(subject: Path) -> None:
    files = {
        "a.png": image_bytes("PNG", seed=1),
        "b.jpg": image_bytes("JPEG", seed=2),
        "c.webp": image_bytes("WEBP", seed=3),
    }
    for name, data in files.items():
        (subject / name).write_bytes(data)

    report = validate_subject(subject)

    assert report.error is None and report.ok
    assert report.subject == "alice" and report.folder == subject
    assert [image.name for image in report.accepted] == ["a.png", "b.jpg", "c.webp"]
    formats = {
        image.name: (image.format, image.extension, image.content_type) for image in report.accepted
    }
    assert formats == {
        "a.png": ("png", "png", "image/png"),
        "b.jpg": ("jpeg", "jpeg", "image/jpeg"),
        "c.webp": ("webp", "webp", "image/webp"),
    }
    for image in report.accepted:
        data = files[image.name]
        assert image.sha256 == hashlib.sha256(data).hexdigest()
        assert image.size_bytes == len(data)
        assert (image.width, image.height) == (512, 512)
        assert image.path == subject / image.name
        assert image.caption is None
    assert report.rejected_files == ()


def test_format_is_judged_by_content_not_extension(subject: Path) -> None:
    (subject / "really_png.jpg").write_bytes(image_bytes("PNG", seed=1))
    (subject / "really_jpeg.webp").write_bytes(image_bytes("JPEG", seed=2))
    (subject / "no_extension").write_bytes(image_bytes("WEBP", seed=3))

    report = validate_subject(subject)

    assert {image.name: image.format for image in report.accepted} == {
        "no_extension": "webp",
        "really_jpeg.webp": "jpeg",
        "really_png.jpg": "png",
    }


@pytest.mark.parametrize(
    ("fmt", "save"),
    [
        ("WEBP", {"lossless": True}),  # VP8L
        ("WEBP", {"quality": 50}),  # VP8
        ("WEBP", {"quality": 50, "alpha": True}),  # VP8X
        ("JPEG", {"progressive": True}),  # SOF2
        ("JPEG", {"exif": b"Exif\x00\x00" + bytes(60_000)}),  # size found after a big APP1
    ],
)
def test_sizes_are_read_from_every_header_variant(
    subject: Path, fmt: str, save: dict[str, object]
) -> None:
    (subject / "photo").write_bytes(image_bytes(fmt, size=(640, 480), **save))

    (image,) = validate_subject(subject).accepted

    assert (image.width, image.height) == (640, 480)


def test_odd_names_work(subject: Path) -> None:
    odd = ["émilie été.png", "-rf --all.png", "space in name .jpg", "日本.webp"]
    for index, name in enumerate(odd):
        (subject / name).write_bytes(image_bytes(seed=index + 1))
    raw = os.fsdecode(b"caf\xe9.png")  # not UTF-8: the name carries a surrogate escape
    (subject / raw).write_bytes(image_bytes(seed=99))

    report = validate_subject(subject)

    names = sorted(image.name for image in report.accepted)
    assert names == sorted([*odd, "caf\\xe9.png"])
    odd_file = next(image for image in report.accepted if image.name == "caf\\xe9.png")
    assert odd_file.path == subject / raw and odd_file.path.exists()
    assert display_name(raw) == "caf\\xe9.png"


def test_ignored_entries_are_neither_accepted_nor_rejected(subject: Path) -> None:
    fill(subject, 1)
    for name in [
        ".DS_Store",
        "._photo_000.png",
        "Thumbs.db",
        "desktop.ini",
        ".ready",
        "subject.toml",
        "photo_000.txt",
        "notes.txt",
    ]:
        (subject / name).write_bytes(b"whatever")
    (subject / ".hidden_dir").mkdir()
    (subject / "__MACOSX").mkdir()

    report = validate_subject(subject)

    assert [image.name for image in report.accepted] == ["photo_000.png"]
    assert report.rejected_files == ()
    assert not any("folder" in warning for warning in report.warnings)


def test_nested_folders_are_not_descended_and_are_named(subject: Path) -> None:
    fill(subject, 1)
    (subject / "old shots").mkdir()
    (subject / "old shots" / "x.png").write_bytes(image_bytes(seed=50))

    report = validate_subject(subject)

    assert [image.name for image in report.accepted] == ["photo_000.png"]
    (warning,) = [w for w in report.warnings if "folder" in w]
    assert warning.startswith("old shots/ is a folder inside alice/ and is ignored")


# ----------------------------------------------------------------------------- rejections


def test_zero_byte_file(subject: Path) -> None:
    fill(subject, 1)
    (subject / "empty.jpg").write_bytes(b"")

    assert reasons(validate_subject(subject)) == {
        "empty.jpg": "empty.jpg is empty (0 bytes): copy the photo again"
    }


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_file(subject: Path, fmt: str) -> None:
    fill(subject, 1)
    data = image_bytes(fmt, seed=7, **({"quality": 95} if fmt != "PNG" else {}))
    (subject / "cut.jpg").write_bytes(data[: len(data) // 2])

    reason = reasons(validate_subject(subject))["cut.jpg"]

    assert reason.startswith(f"cut.jpg is a damaged {fmt} file (")
    assert reason.endswith("): export or copy it again")


@pytest.mark.parametrize(
    ("marker", "offset", "garbage", "problem"),
    [
        (
            b"\xff\xc4",
            5,
            b"\xff" * 20,
            "broken data stream when reading image file",
        ),  # Huffman table wiped
        (b"\xff\xda", 0, b"\xff\xfe", "cannot load this image"),  # no start of scan
        (b"\xff\xc0", 9, b"\x00", "cannot handle 0-layer images"),  # frame without components
    ],
)
def test_corrupt_jpeg_is_rejected(
    subject: Path, marker: bytes, offset: int, garbage: bytes, problem: str
) -> None:
    fill(subject, 1)
    data = bytearray(image_bytes("JPEG", seed=8))
    at = data.index(marker) + offset
    data[at : at + len(garbage)] = garbage
    (subject / "broken.jpg").write_bytes(bytes(data))

    report = validate_subject(subject)

    assert [image.name for image in report.accepted] == ["photo_000.png"]
    assert reasons(report)["broken.jpg"] == (
        f"broken.jpg is a damaged JPEG file ({problem}): export or copy it again"
    )


HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(40)
HEIF_MIF1 = b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1heicmiaf" + bytes(40)
AVIF = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(40)


@pytest.mark.parametrize(
    ("data", "label"),
    [
        (image_bytes("GIF", seed=3), "a GIF image"),
        (image_bytes("BMP", seed=3), "a BMP image"),
        (image_bytes("TIFF", seed=3), "a TIFF image"),
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2mp41" + bytes(40), "an MP4"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "an SVG drawing"),
        (b"%PDF-1.7\n", "a PDF document"),
        (b"\x13\x99\x00\x00random binary \x00\x01", "not a recognised image"),
    ],
)
def test_wrong_format_named_jpg_is_rejected_naming_the_format(
    subject: Path, data: bytes, label: str
) -> None:
    fill(subject, 1)
    (subject / "photo.jpg").write_bytes(data)

    reason = reasons(validate_subject(subject))["photo.jpg"]

    assert reason.startswith(f"photo.jpg is {label}")
    assert "not png/jpeg/webp (or HEIC/AVIF): convert it to PNG or JPEG" in reason


@pytest.mark.parametrize(
    ("data", "label"),
    [(HEIC, "HEIC/HEIF"), (HEIF_MIF1, "HEIC/HEIF"), (AVIF, "AVIF")],
)
def test_a_phone_format_that_does_not_decode_is_refused_as_damaged(
    subject: Path, data: bytes, label: str
) -> None:
    fill(subject, 1)
    (subject / "IMG_0001.jpg").write_bytes(data)

    reason = reasons(validate_subject(subject))["IMG_0001.jpg"]

    assert reason == (
        f"IMG_0001.jpg is a damaged {label} file (no readable size in its header): export or "
        "copy it again"
    )


def test_text_named_png(subject: Path) -> None:
    fill(subject, 1)
    (subject / "notes.png").write_text("remember to buy milk\nand eggs\n", encoding="utf-8")

    assert reasons(validate_subject(subject))["notes.png"] == (
        "notes.png is a text file, not png/jpeg/webp (or HEIC/AVIF): convert it to PNG or "
        "JPEG, or remove it"
    )


def test_huge_pixel_count_is_rejected_from_the_header_without_decoding(
    subject: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(subject, 1)
    (subject / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    decoded: list[tuple[int, int]] = []
    original = photo_files.measure_photo

    def spy(fp: IO[bytes], *, find_faces: bool) -> PhotoMeasures:
        measures = original(fp, find_faces=find_faces)
        decoded.append(measures.stored_size)
        return measures

    monkeypatch.setattr(photo_files, "measure_photo", spy)

    report = validate_subject(subject)  # filterwarnings=error: no DecompressionBombWarning

    assert reasons(report)["bomb.png"] == (
        "bomb.png is 100000x100000 (10000 megapixels), over the 40-megapixel limit: "
        "scale it down (2048 px on the long side is plenty)"
    )
    assert decoded == [(512, 512)]  # only the good photo was decoded


def test_max_pixels_applies_to_real_images(subject: Path) -> None:
    (subject / "big.webp").write_bytes(image_bytes("WEBP", size=(1000, 800), seed=1))

    report = validate_subject(subject, max_pixels=500_000)

    assert reasons(report)["big.webp"].startswith("big.webp is 1000x800 (1 megapixels), over")
    assert report.error is not None and "no usable photo" in report.error


def test_png_header_without_ihdr_is_damaged(subject: Path) -> None:
    fill(subject, 1)
    (subject / "odd.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))

    assert (
        "odd.png is a damaged PNG file (no readable size"
        in reasons(validate_subject(subject))["odd.png"]
    )


def test_exact_duplicates_keep_the_first_by_name(subject: Path) -> None:
    data = image_bytes(seed=5)
    (subject / "b.png").write_bytes(data)
    (subject / "a.png").write_bytes(data)
    (subject / "c.jpg").write_bytes(data)  # a PNG under another name: still the same bytes

    report = validate_subject(subject)

    assert [image.name for image in report.accepted] == ["a.png"]
    assert reasons(report) == {
        "b.png": "b.png is an exact copy of a.png: only a.png is used; delete the copy",
        "c.jpg": "c.jpg is an exact copy of a.png: only a.png is used; delete the copy",
    }


def test_symlink_outside_the_inbox_is_rejected_and_never_read(
    tmp_path: Path, subject: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(subject, 1)
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(image_bytes(seed=9))
    (subject / "link.png").symlink_to(outside)
    opened: list[Path] = []
    original = photo_files._open_for_read

    def spy(path: Path) -> io.BufferedReader:
        opened.append(path)
        return original(path)

    monkeypatch.setattr(photo_files, "_open_for_read", spy)

    report = validate_subject(subject)

    assert reasons(report)["link.png"].startswith(
        "link.png is a link that points outside the inbox"
    )
    assert outside not in opened and outside.resolve() not in opened


def test_symlink_inside_the_inbox_is_followed_to_its_target(inbox: Path, subject: Path) -> None:
    shared = inbox / "shared"
    shared.mkdir()
    (shared / "photo.png").write_bytes(image_bytes(seed=4))
    (subject / "link.png").symlink_to(Path("..") / "shared" / "photo.png")
    (subject / "broken.png").symlink_to(inbox / "missing.png")

    report = validate_subject(subject)

    (image,) = report.accepted
    assert image.name == "link.png"
    assert image.path == (shared / "photo.png").resolve()
    assert reasons(report)["broken.png"].startswith("broken.png is a broken link")


def test_root_can_be_given(tmp_path: Path, subject: Path) -> None:
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(image_bytes(seed=9))
    (subject / "link.png").symlink_to(outside)

    assert validate_subject(subject, root=tmp_path).ok


def test_unreadable_file(subject: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(subject, 1)
    locked = subject / "locked.png"
    locked.write_bytes(image_bytes(seed=11))
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # running as root: permissions do not stop reads
        original = photo_files._open_for_read

        def refuse(path: Path) -> io.BufferedReader:
            if path.name == "locked.png":
                raise PermissionError(13, "Permission denied", str(path))
            return original(path)

        monkeypatch.setattr(photo_files, "_open_for_read", refuse)

    report = validate_subject(subject)
    locked.chmod(0o644)

    assert reasons(report) == {
        "locked.png": "locked.png cannot be read (permission denied): make it readable by "
        "the pipeline's user (chmod a+r), or remove it"
    }
    assert len(report.accepted) == 1


def test_fifo_is_rejected_without_blocking(subject: Path) -> None:
    fill(subject, 1)
    os.mkfifo(subject / "pipe.png")

    assert reasons(validate_subject(subject)) == {
        "pipe.png": "pipe.png is not a regular file (a FIFO): replace it with the photo "
        "itself, or remove it"
    }


def test_file_changed_during_the_scan(subject: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(subject, 2)
    growing = subject / "photo_001.png"
    original = photo_files._read_bounded

    def read_while_writing(fp: IO[bytes]) -> bytes:
        result = original(fp)
        if os.fstat(fp.fileno()).st_ino == growing.stat().st_ino:
            with growing.open("ab") as out:
                out.write(b"more bytes arriving")
        return result

    monkeypatch.setattr(photo_files, "_read_bounded", read_while_writing)

    report = validate_subject(subject)

    assert [image.name for image in report.accepted] == ["photo_000.png"]
    (rejection,) = report.rejected_files
    assert rejection == Rejection(
        "photo_001.png",
        "photo_001.png changed while being read: will be checked again on the next pass",
        transient=True,
    )
    assert not report.settled
    monkeypatch.undo()
    again = validate_subject(subject)
    assert again.settled and len(again.accepted) == 2


def test_file_vanishing_during_the_scan_is_transient(
    subject: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(subject, 2)
    original = photo_files._open_for_read

    def vanish(path: Path) -> io.BufferedReader:
        if path.name == "photo_001.png":
            path.unlink()
        return original(path)

    monkeypatch.setattr(photo_files, "_open_for_read", vanish)

    (rejection,) = validate_subject(subject).rejected_files

    assert rejection.transient and "changed while being read" in rejection.reason


# ----------------------------------------------------------------------------- subject errors


def test_more_than_50_images_rejects_the_subject(subject: Path) -> None:
    fill(subject, 51, size=(32, 32))

    report = validate_subject(subject, photos=PhotoSettings(training_size=(32, 32)))

    assert not report.ok
    assert report.error == (
        "51 images, at most 50 per training: move 1 out into another folder, or split the subject"
    )
    assert len(report.accepted) == 51


def test_max_images_is_configurable(subject: Path) -> None:
    fill(subject, 12, size=(32, 32))

    report = validate_subject(subject, photos=PhotoSettings(training_size=(32, 32)), max_images=5)

    assert report.error is not None and report.error.startswith("12 images, at most 5 per")
    assert "move 7 out" in report.error


def test_fewer_than_ten_images_warns(subject: Path) -> None:
    fill(subject, 9)

    report = validate_subject(subject)

    assert report.ok
    assert report.warnings == (
        "only 9 usable images in alice/: at least 10 are recommended for a good result; add "
        "photos, or lower min_images_warning in the job file",
    )
    fill(subject, 1, start=9)
    assert validate_subject(subject).warnings == ()


def test_the_job_decides_how_few_images_warn(subject: Path) -> None:
    fill(subject, 12, size=(32, 32))

    fewer = validate_subject(subject, photos=PhotoSettings(training_size=(32, 32)), min_images_warning=15)
    quiet = validate_subject(subject, photos=PhotoSettings(training_size=(32, 32)), min_images_warning=5)
    never = validate_subject(subject, photos=PhotoSettings(training_size=(32, 32)), min_images_warning=0)

    assert fewer.ok and fewer.warnings == (
        "only 12 usable images in alice/: at least 15 are recommended for a good result; add "
        "photos, or lower min_images_warning in the job file",
    )
    assert quiet.ok and quiet.warnings == () and never.warnings == ()


def test_small_images_warn_naming_file_and_size(subject: Path) -> None:
    fill(subject, 10)
    (subject / "tiny.jpg").write_bytes(image_bytes("JPEG", size=(300, 600), seed=77))

    report = validate_subject(subject)

    assert report.ok and len(report.accepted) == 11
    assert report.warnings == (
        "tiny.jpg is 300x600, smaller than the 512x512 training size: it will be upscaled "
        "and may look soft; use a larger photo if you have one",
    )
    assert validate_subject(subject, photos=PhotoSettings(training_size=(256, 256))).warnings == ()


def test_empty_folder_and_no_usable_photo(subject: Path, inbox: Path) -> None:
    assert validate_subject(subject).error == (
        "no photos in alice/: add png, jpeg or webp photos to it"
    )
    (subject / "a.gif").write_bytes(image_bytes("GIF"))
    (subject / "b.jpg").write_bytes(b"")

    report = validate_subject(subject)

    assert report.error == (
        "no usable photo in alice/: all 2 files were rejected (see the reasons for each)"
    )
    assert not report.ok
    missing = validate_subject(inbox / "nobody")
    assert not missing.ok and missing.error is not None and "not a folder" in missing.error


# ----------------------------------------------------------------------------- captions


def test_captions_from_mapping_and_sidecars(subject: Path) -> None:
    fill(subject, 3)
    (subject / "photo_001.txt").write_text("  from the sidecar \n", encoding="utf-8")
    (subject / "photo_002.txt").write_text("sidecar loses", encoding="utf-8")
    captions = {"photo_000.png": "from the mapping", "photo_002.png": "mapping wins"}

    report = validate_subject(subject, kind="style", captions=captions)

    assert report.ok
    assert {image.name: image.caption for image in report.accepted} == {
        "photo_000.png": "from the mapping",
        "photo_001.png": "from the sidecar",
        "photo_002.png": "mapping wins",
    }


def test_style_needs_a_caption_for_every_image(subject: Path) -> None:
    fill(subject, 3)
    (subject / "photo_001.txt").write_text("   ", encoding="utf-8")  # blank: no caption

    report = validate_subject(subject, kind="style", captions={"photo_002.png": "a caption"})

    assert not report.ok
    assert report.error == (
        "style training needs a caption for every image; missing for photo_000.png, "
        "photo_001.png: add them to subject.toml or as <name>.txt next to each image"
    )
    assert validate_subject(subject, kind="subject").ok


def test_caption_too_long_rejects_that_file(subject: Path) -> None:
    fill(subject, 3)
    (subject / "photo_001.txt").write_text("y" * 2000, encoding="utf-8")

    report = validate_subject(
        subject, captions={"photo_000.png": "x" * 1025, "photo_002.png": "z" * 1024}
    )

    assert reasons(report) == {
        "photo_000.png": "photo_000.png has a caption of 1025 characters, over the 1024 "
        "allowed: shorten it",
        "photo_001.png": "photo_001.png has a caption of 2000 characters, over the 1024 "
        "allowed: shorten it",
    }
    assert [image.caption for image in report.accepted] == ["z" * 1024]


def test_unreadable_sidecar_rejects_its_image(subject: Path) -> None:
    fill(subject, 2)
    (subject / "photo_000.txt").write_bytes(b"\xff\xfe not utf-8 \xc3")

    report = validate_subject(subject)

    assert reasons(report) == {
        "photo_000.png": "photo_000.png: its caption file photo_000.txt cannot be read "
        "(not UTF-8 text): fix or delete it"
    }


def test_unknown_caption_keys_warn(subject: Path) -> None:
    fill(subject, 10)

    report = validate_subject(subject, captions={"photo_000.png": "ok", "typo.png": "lost"})

    assert report.warnings == (
        "a caption is given for 'typo.png', which is not a photo in this folder: check the name",
    )


# ----------------------------------------------------------------------------- fingerprints


def build(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).write_bytes(data)


def test_fingerprint_is_stable_across_renames_and_runs(inbox: Path) -> None:
    one, two = inbox / "one", inbox / "two"
    one.mkdir()
    two.mkdir()
    build(one, {"a.png": image_bytes(seed=1), "b.png": image_bytes(seed=2)})
    build(two, {"z.png": image_bytes(seed=2), "renamed.jpg": image_bytes(seed=1)})

    first = validate_subject(one).fingerprint

    assert len(first) == 64 and int(first, 16) >= 0
    assert validate_subject(one).fingerprint == first
    assert validate_subject(two).fingerprint == first


def test_fingerprint_changes_with_content_and_captions(subject: Path) -> None:
    build(subject, {"a.png": image_bytes(seed=1), "b.png": image_bytes(seed=2)})
    base = validate_subject(subject).fingerprint

    captioned = validate_subject(subject, captions={"a.png": "a person"}).fingerprint
    recaptioned = validate_subject(subject, captions={"a.png": "a woman"}).fingerprint
    (subject / "b.png").write_bytes(image_bytes(seed=3))
    edited = validate_subject(subject).fingerprint
    (subject / "c.png").write_bytes(image_bytes(seed=4))
    added = validate_subject(subject).fingerprint

    assert len({base, captioned, recaptioned, edited, added}) == 5


def test_fingerprint_ignores_rejected_files(subject: Path) -> None:
    fill(subject, 2)
    base = validate_subject(subject).fingerprint
    (subject / "broken.jpg").write_bytes(b"")
    (subject / "copy.png").write_bytes((subject / "photo_000.png").read_bytes())

    assert validate_subject(subject).fingerprint == base


# ----------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "riff"),
        (b"GIF87a....", "gif"),
        (b"II*\x00\x08\x00", "tiff"),
        (b"MM\x00*\x00\x00", "tiff"),
        (HEIC, "heic"),
        (HEIF_MIF1, "heic"),
        (AVIF, "avif"),
        (b"BMW notes, plain text", "text"),
        (b"<svg width='1'/>", "svg"),
        ("caption with ünïcödé".encode()[:-1], "text"),  # cut inside a character
        (b"", None),
        (b"\x00\x01\x02\x03", None),
    ],
)
def test_detect_format(head: bytes, expected: str | None) -> None:
    assert detect_format(head) == expected


def test_hashing_streams_in_chunks(subject: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(photo_files, "HASH_CHUNK_BYTES", 1000)
    data = image_bytes("PNG", size=(300, 300), seed=3, compress_level=0)
    (subject / "a.png").write_bytes(data)
    reads: list[int] = []
    original: Callable[[IO[bytes]], bytes] = photo_files._read_bounded

    def spy(fp: IO[bytes]) -> bytes:
        real_read = fp.read

        def read(size: int = -1) -> bytes:
            reads.append(size)
            return real_read(size)

        fp.read = read  # type: ignore[method-assign]
        try:
            return original(fp)
        finally:
            del fp.read

    monkeypatch.setattr(photo_files, "_read_bounded", spy)

    (image,) = validate_subject(subject).accepted

    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert len(reads) > 100 and set(reads) == {1000}
