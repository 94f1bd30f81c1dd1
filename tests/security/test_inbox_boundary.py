"""The inbox is a trust boundary: nothing in it can make the pipeline read outside it, block
it, or exhaust its memory, and every refusal ends as a readable reason on its subject.

An audit hook (:class:`Guard`) watches every open and listing the process makes while a test
runs. It records, and refuses with ``PermissionError``, an open or listing of a place the
test forbids, of anything reached through the inbox that resolves outside it, and any open of
a FIFO that could block. So a regression fails these tests at once, as a recorded
violation, instead of hanging the suite on a FIFO or filling memory from ``/dev/zero``.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from aiohttp import web

from pipeline.cli.commands import main
from pipeline.emulator import EmulatorHandle
from pipeline.engine.runner import Runner
from pipeline.engine.stages.intake import intake
from pipeline.engine.stages.upload import file_sha256
from pipeline.errors import ConfigError
from pipeline.files import open_reader
from pipeline.inputs import dataset, inbox, photo_files
from pipeline.inputs.dataset import validate_subject
from pipeline.inputs.inbox import scan_inbox
from pipeline.inputs.safe_files import (
    RefusedFile,
    open_beneath,
    open_inbox_file,
    read_inbox_file,
)
from pipeline.jobfile.loading import JobConfig, load_job, load_subject_overrides
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import DONE, REJECTED, VALIDATED
from pipeline.views.summary import EXIT_REJECTED
from tests.conftest import RecordingClock, fast_settings, write_job
from tests.pictures import picture_bytes

from .conftest import Workspace
from .hostile import Hostile

T0 = 1_700_000_000.0

# ----------------------------------------------------------------------------- the guard


class Guard:
    """What the process may not open or list while a test runs, and what it tried."""

    def __init__(self, inbox: Path, forbidden: tuple[Path, ...] = ()) -> None:
        self.inbox = inbox
        self.forbidden = tuple(os.path.realpath(p) for p in forbidden)
        self.violations: list[str] = []

    def judge(self, event: str, path: str, flags: int | None) -> str | None:
        given = os.path.abspath(path)
        real = os.path.realpath(path)
        inbox = str(self.inbox)
        if any(real == p or real.startswith(p + os.sep) for p in self.forbidden):
            return f"{event} {given}: forbidden ({real})"
        if given.startswith(inbox + os.sep) and not real.startswith(
            os.path.realpath(inbox) + os.sep
        ):
            return f"{event} {given}: through the inbox to {real}"
        if event == "open" and not (flags or 0) & os.O_NONBLOCK:
            try:
                mode = os.stat(path).st_mode
            except OSError:
                return None
            if stat.S_ISFIFO(mode):
                return f"{event} {given}: a FIFO opened in blocking mode"
        return None


_active: list[Guard] = []
_inside = threading.local()  # the hook's own stat and realpath calls are not judged
_installed: list[bool] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _active or getattr(_inside, "on", False):
        return
    if event == "open":
        path, flags = args[0], args[2]
    elif event in ("os.scandir", "os.listdir"):
        path, flags = args[0], None
    else:
        return
    if not isinstance(path, (str, bytes, os.PathLike)):
        return  # a file descriptor: its open was judged already
    _inside.on = True
    try:
        problem = _active[-1].judge(event, os.fsdecode(path), flags)
    finally:
        _inside.on = False
    if problem is not None:
        _active[-1].violations.append(problem)
        raise PermissionError(13, "refused by the test's guard", os.fsdecode(path))


def guarding(inbox: Path, *forbidden: Path) -> Guard:
    if not _installed:
        sys.addaudithook(_hook)  # hooks cannot be removed: it idles when no guard is active
        _installed.append(True)
    guard = Guard(inbox, forbidden)
    _active.append(guard)
    return guard


@pytest.fixture(autouse=True)
def _no_guard_left() -> Iterator[None]:
    yield
    _active.clear()


# ----------------------------------------------------------------------------- helpers


def photo(seed: int) -> bytes:
    """A sharp PNG of its own per seed (:mod:`tests.pictures`): the photo gate takes it, so
    what these tests see refused is refused for the hazard, not for the picture."""
    return picture_bytes("PNG", (128, 128), seed)


def subject_with_photos(inbox: Path, name: str, *seeds: int) -> Path:
    folder = inbox / name
    folder.mkdir(parents=True)
    for seed in seeds:
        (folder / f"p{seed}.png").write_bytes(photo(seed))
    return folder


@pytest.fixture
def inbox_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the inbox with a photo and a subject.toml nobody may read."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.png").write_bytes(photo(99))
    (folder / "subject.toml").write_text('class_word = "secret"\n')
    return folder


# ----------------------------------------------------------------------------- one file


def test_a_fifo_is_refused_without_blocking(inbox_dir: Path) -> None:
    fifo = inbox_dir / "pipe.png"
    os.mkfifo(fifo)
    guard = guarding(inbox_dir)

    with pytest.raises(RefusedFile) as caught:
        open_inbox_file(fifo, root=inbox_dir)

    assert str(caught.value) == f"{fifo} is not a regular file (a FIFO)"
    assert caught.value.problem == "is not a regular file (a FIFO)"
    assert guard.violations == []


def test_a_device_is_refused_without_being_opened(inbox_dir: Path) -> None:
    guard = guarding(inbox_dir, Path("/dev/zero"))

    with pytest.raises(RefusedFile, match=r"/dev/zero is not a regular file \(a device\)"):
        read_inbox_file(Path("/dev/zero"), limit=16, root=Path("/"))

    assert guard.violations == []


def test_a_link_is_followed_only_to_inside_the_root(inbox_dir: Path, outside: Path) -> None:
    shared = inbox_dir / ".shared"
    shared.mkdir()
    (shared / "caption.txt").write_text("shared caption")
    (inbox_dir / "inside.txt").symlink_to(shared / "caption.txt")
    (inbox_dir / "out.toml").symlink_to(outside / "subject.toml")
    (inbox_dir / "zero.toml").symlink_to("/dev/zero")
    (inbox_dir / "broken.txt").symlink_to(inbox_dir / "missing.txt")
    guard = guarding(inbox_dir, outside, Path("/dev/zero"))

    assert read_inbox_file(inbox_dir / "inside.txt", limit=64, root=inbox_dir) == (
        b"shared caption"
    )
    for name in ("out.toml", "zero.toml"):
        with pytest.raises(RefusedFile) as caught:
            read_inbox_file(inbox_dir / name, limit=64, root=inbox_dir)
        assert caught.value.problem == "is a link that points outside the inbox"
    with pytest.raises(RefusedFile, match="is a broken link"):
        open_inbox_file(inbox_dir / "broken.txt", root=inbox_dir)
    with pytest.raises(RefusedFile, match=r"is not a regular file \(a link\)"):
        open_inbox_file(inbox_dir / "inside.txt")  # no root: no link is followed
    assert guard.violations == []


def test_a_read_stops_at_its_cap(inbox_dir: Path) -> None:
    exact, over = inbox_dir / "exact.txt", inbox_dir / "over.txt"
    exact.write_bytes(b"x" * 1024)
    over.write_bytes(b"x" * 1025)

    assert read_inbox_file(exact, limit=1024, root=inbox_dir) == b"x" * 1024
    with pytest.raises(RefusedFile) as caught:
        read_inbox_file(over, limit=1024, root=inbox_dir)
    assert str(caught.value) == f"{over} is larger than 1 KiB"


def test_a_name_turned_into_a_fifo_after_the_check_is_refused_by_fstat(
    inbox_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fifo, plain = inbox_dir / "late.png", inbox_dir / "plain.png"
    os.mkfifo(fifo)
    plain.write_bytes(photo(1))
    real_lstat = os.lstat

    def looks_regular(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        # What a stat before the open saw, an instant before the name was swapped.
        return real_lstat(plain if Path(path) == fifo else path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", looks_regular)
    guard = guarding(inbox_dir)

    with pytest.raises(RefusedFile, match=r"late.png is not a regular file \(a FIFO\)"):
        open_inbox_file(fifo, root=inbox_dir)
    assert guard.violations == []


def test_open_beneath_follows_no_link_on_the_way(inbox_dir: Path, outside: Path) -> None:
    alice = subject_with_photos(inbox_dir, "alice", 1)
    subject_with_photos(inbox_dir, ".staging/carol", 2)
    (inbox_dir / "carol").symlink_to(Path(".staging") / "carol")  # inside, still a link
    (inbox_dir / "smuggled").symlink_to(outside)
    (alice / "nested").write_bytes(b"a file where a folder is expected")
    os.mkfifo(alice / "pipe.png")
    guard = guarding(inbox_dir, outside)

    with open_beneath(inbox_dir, alice / "p1.png") as handle:
        assert handle.read() == photo(1)
    with open_beneath(inbox_dir, inbox_dir / ".staging" / "carol" / "p2.png") as handle:
        assert handle.read() == photo(2)
    refusals = {}
    for path in (inbox_dir / "carol" / "p2.png", inbox_dir / "smuggled" / "secret.png",
                 alice / "nested" / "p1.png", alice / "pipe.png", outside / "secret.png",
                 inbox_dir / "alice" / ".." / "smuggled" / "secret.png"):
        with pytest.raises(RefusedFile) as caught:
            open_beneath(inbox_dir, path)
        assert caught.value.path == path
        refusals[path.relative_to(inbox_dir.parent).as_posix()] = caught.value.problem

    assert refusals == {
        "inbox/carol/p2.png": "is reached through a link (carol), which is not followed",
        "inbox/smuggled/secret.png": "is reached through a link (smuggled), which is not "
        "followed",
        "inbox/alice/nested/p1.png": "is reached through alice/nested, which is not a folder",
        "inbox/alice/pipe.png": "is not a regular file (a FIFO)",
        "outside/secret.png": "is not inside the inbox",
        "inbox/alice/../smuggled/secret.png": "is reached through a link (smuggled), which "
        "is not followed",
    }
    assert guard.violations == []


def test_open_beneath_keeps_reading_what_it_opened_after_a_swap(
    inbox_dir: Path, outside: Path
) -> None:
    alice = subject_with_photos(inbox_dir, "alice", 1)
    (outside / "p1.png").write_bytes(b"TOP SECRET")

    with open_beneath(inbox_dir, alice / "p1.png") as handle:
        assert handle.name == str(alice / "p1.png")  # named like a file opened by its name
        alice.rename(inbox_dir / ".moved")
        alice.symlink_to(outside)
        assert handle.read() == photo(1)
        handle.seek(0)  # what a retried upload does
        assert handle.read() == photo(1)
    with pytest.raises(RefusedFile, match=r"through a link \(alice\)"):
        open_beneath(inbox_dir, alice / "p1.png")


def test_open_beneath_takes_the_root_by_either_spelling(tmp_path: Path) -> None:
    real = tmp_path / "disk" / "inbox"
    subject_with_photos(real, "alice", 1)
    (tmp_path / "inbox").symlink_to(real)  # the operator's inbox path has a link in it
    spelt = tmp_path / "inbox"

    for path in (spelt / "alice" / "p1.png", real / "alice" / "p1.png"):
        with open_beneath(spelt, path) as handle:
            assert handle.read() == photo(1)


# ----------------------------------------------------------------------------- the inbox walk


def test_a_subject_folder_linked_outside_the_inbox_is_refused_unread(
    inbox_dir: Path, outside: Path
) -> None:
    (inbox_dir / "smuggled").symlink_to(outside)
    (inbox_dir / "system").symlink_to("/etc")
    subject_with_photos(inbox_dir, "alice", 1)
    guard = guarding(inbox_dir, outside)

    found = {f.name: f for f in scan_inbox(inbox_dir, settle_seconds=0, now=T0)}

    assert guard.violations == []
    for name in ("smuggled", "system"):
        folder = found[name]
        assert not folder.ready
        assert folder.refused == folder.reason == (
            f"{inbox_dir / name} is a link to a folder outside the inbox: move the photos into "
            "the inbox itself"
        )
    assert found["alice"].ready and found["alice"].refused is None
    report = validate_subject(inbox_dir / "smuggled")  # and asked directly, still unread
    assert report.error == found["smuggled"].refused and not report.accepted
    assert guard.violations == []


def test_links_inside_the_inbox_never_make_the_same_photos_two_subjects(
    inbox_dir: Path,
) -> None:
    subject_with_photos(inbox_dir, "alice", 1)
    subject_with_photos(inbox_dir, ".staging/carol", 2)
    (inbox_dir / "carol").symlink_to(Path(".staging") / "carol")
    (inbox_dir / "carol_again").symlink_to(inbox_dir / ".staging" / "carol")
    (inbox_dir / "alias").symlink_to("alice")
    (inbox_dir / "everything").symlink_to(".")

    found = {f.name: f for f in scan_inbox(inbox_dir, settle_seconds=0, now=T0)}

    assert [n for n, f in found.items() if f.ready] == ["alice", "carol"]
    assert found["carol"].path == inbox_dir / "carol"
    assert found["alias"].refused == (
        f"{inbox_dir / 'alias'} is a link to alice/, another subject of the inbox, whose "
        "photos are trained there already: remove the link, or move the photos here"
    )
    assert found["carol_again"].refused == (
        f"{inbox_dir / 'carol_again'} is a link to the same folder as carol: its photos are "
        "trained there already; remove one of the two links"
    )
    assert found["everything"].refused == (
        f"{inbox_dir / 'everything'} is a link to the inbox itself: remove the link"
    )
    assert [n for n, f in found.items() if f.refused is None] == ["alice", "carol"]


def test_a_subject_folder_linked_inside_the_inbox_yields_paths_without_links(
    inbox_dir: Path,
) -> None:
    subject_with_photos(inbox_dir, ".staging/carol", 2)
    (inbox_dir / "carol").symlink_to(Path(".staging") / "carol")

    report = validate_subject(inbox_dir / "carol", root=inbox_dir)

    (image,) = report.accepted
    assert report.subject == "carol"
    assert image.path == (inbox_dir / ".staging" / "carol" / "p2.png").resolve()
    with open_beneath(inbox_dir, image.path) as handle:  # what the upload opens
        assert hashlib.sha256(handle.read()).hexdigest() == image.sha256


def test_a_folder_with_too_many_entries_is_refused_without_walking_on(
    inbox_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox, "MAX_FOLDER_ENTRIES", 20)
    full = subject_with_photos(inbox_dir, "full", 1)
    (full / "deep" / "deeper").mkdir(parents=True)
    for index in range(17):  # 1 photo + 2 folders + 17 = 20 entries: the limit
        (full / "deep" / "deeper" / f"x{index}").write_bytes(b"")
    over = subject_with_photos(inbox_dir, "over", 1)
    for index in range(20):
        (over / f"y{index}").write_bytes(b"")

    found = {f.name: f for f in scan_inbox(inbox_dir, settle_seconds=0, now=T0)}

    assert found["full"].ready and found["full"].refused is None
    assert found["over"].refused == (
        f"{over} holds more than 20 files and folders, and a subject is at most 50 photos: "
        "move what is not its photos out of it"
    )


def test_validation_lists_no_more_than_the_entry_limit(
    inbox_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset, "MAX_FOLDER_ENTRIES", 3)
    folder = subject_with_photos(inbox_dir, "alice", 1, 2, 3, 4)

    report = validate_subject(folder)

    assert report.error == (
        f"{folder} holds more than 3 entries, and a subject is at most 50 photos: move what "
        "is not photos of alice out of it"
    )
    assert not report.accepted


# ----------------------------------------------------------------------------- captions


def test_a_caption_sidecar_that_is_a_fifo_or_too_big_rejects_its_photo(inbox_dir: Path) -> None:
    folder = subject_with_photos(inbox_dir, "alice", 1, 2, 3)
    os.mkfifo(folder / "p1.txt")
    (folder / "p2.txt").write_text("a" * (8 * 1024 + 1))
    (folder / "p3.txt").write_text("a fine caption")
    guard = guarding(inbox_dir)

    report = validate_subject(folder)

    assert {r.name: r.reason for r in report.rejected_files} == {
        "p1.png": "p1.png: its caption file p1.txt is not a regular file (a FIFO): replace it "
        "with a plain text file (at most 8 KiB), or delete it",
        "p2.png": "p2.png: its caption file p2.txt is larger than 8 KiB: replace it with a "
        "plain text file (at most 8 KiB), or delete it",
    }
    assert [(i.name, i.caption) for i in report.accepted] == [("p3.png", "a fine caption")]
    assert guard.violations == []


def test_a_caption_read_after_its_folder_became_a_link_is_refused(
    inbox_dir: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = subject_with_photos(inbox_dir, "alice", 1)
    (folder / "p1.txt").write_text("a fine caption")
    (outside / "p1.txt").write_text("TOP SECRET")
    inspect = photo_files._inspect

    def swap_after_the_photo(*args: Any) -> Any:
        result = inspect(*args)
        folder.rename(inbox_dir / ".moved")
        folder.symlink_to(outside)  # the caption is read next, through the swapped folder
        return result

    monkeypatch.setattr(photo_files, "_inspect", swap_after_the_photo)

    report = validate_subject(folder)

    assert {r.name: r.reason for r in report.rejected_files} == {
        "p1.png": "p1.png: its caption file p1.txt is reached through a link (alice), which "
        "is not followed: replace it with a plain text file (at most 8 KiB), or delete it",
    }
    assert "TOP SECRET" not in repr(report)


def test_a_photo_over_the_byte_cap_is_refused_from_its_size_unread(
    inbox_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = subject_with_photos(inbox_dir, "alice", 1, 2)
    huge = folder / "huge.png"
    huge.write_bytes(photo(3))
    os.truncate(huge, photo_files.MAX_PHOTO_BYTES + 1)  # a good PNG, then a sparse tail
    read: list[int] = []
    reader = photo_files._read_bounded

    def spy(fp: IO[bytes]) -> bytes:
        read.append(os.fstat(fp.fileno()).st_ino)
        return reader(fp)

    monkeypatch.setattr(photo_files, "_read_bounded", spy)

    report = validate_subject(folder)

    assert {r.name: r.reason for r in report.rejected_files} == {
        "huge.png": "huge.png is 50 MiB, over the 50 MiB a photo may be: export it smaller "
        "(a JPEG of 2048 px on the long side is a few MiB), or remove it",
    }
    assert [i.name for i in report.accepted] == ["p1.png", "p2.png"]
    assert read and huge.stat().st_ino not in read  # the others were read, it was not
    with pytest.raises(RefusedFile, match="is larger than 50 MiB"):
        file_sha256(huge)  # and the upload refuses it the same way


def test_a_hash_stops_reading_past_the_byte_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(photo_files, "MAX_PHOTO_BYTES", 10)
    monkeypatch.setattr(photo_files, "HASH_CHUNK_BYTES", 4)

    stream = io.BytesIO(b"x" * 1000)  # a file still growing

    data = photo_files._read_bounded(stream)  # what is hashed and decoded

    assert len(data) == 12  # three chunks: past the cap (its length shows it)
    assert stream.tell() == 12  # and read no further


# ----------------------------------------------------------------------------- subject.toml


@pytest.fixture
def job(tmp_path: Path) -> JobConfig:
    return load_job(write_job(tmp_path, prompts=1))


def test_a_subject_toml_fifo_is_a_config_error_not_a_hang(job: JobConfig) -> None:
    folder = subject_with_photos(job.job.inbox, "alice", 1)
    os.mkfifo(folder / "subject.toml")
    guard = guarding(job.job.inbox)

    with pytest.raises(ConfigError) as caught:
        job.subject_settings(folder)

    assert str(caught.value) == (
        f"{folder / 'subject.toml'} is not a regular file (a FIFO): replace it with a plain "
        "text file (at most 256 KiB)"
    )
    assert guard.violations == []


def test_a_subject_toml_link_is_followed_only_inside_the_inbox(job: JobConfig) -> None:
    inbox_dir = job.job.inbox
    shared = inbox_dir / ".shared"
    shared.mkdir()
    (shared / "subject.toml").write_text('class_word = "teapot"\n')
    linked = subject_with_photos(inbox_dir, "pot", 1)
    (linked / "subject.toml").symlink_to(shared / "subject.toml")
    zero = subject_with_photos(inbox_dir, "zero", 2)
    (zero / "subject.toml").symlink_to("/dev/zero")
    guard = guarding(inbox_dir, Path("/dev/zero"))

    assert job.subject_settings(linked).training.class_word == "teapot"
    with pytest.raises(ConfigError) as caught:
        load_subject_overrides(zero)

    assert str(caught.value) == (
        f"{zero / 'subject.toml'} is a link that points outside the inbox: replace it with a "
        "plain text file (at most 256 KiB)"
    )
    assert guard.violations == []


def test_a_huge_subject_toml_is_refused_after_its_cap(job: JobConfig) -> None:
    folder = subject_with_photos(job.job.inbox, "alice", 1)
    (folder / "subject.toml").write_text("# padding\n" * 30_000)  # 300 kB of valid TOML

    with pytest.raises(ConfigError, match=r"subject.toml is larger than 256 KiB: replace it"):
        job.subject_settings(folder)


def test_a_job_file_that_is_a_fifo_is_an_error_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "job.toml"
    os.mkfifo(fifo)
    guard = guarding(tmp_path / "inbox")

    with pytest.raises(ConfigError) as caught:
        load_job(fifo)

    assert str(caught.value) == (
        f"{fifo} is not a regular file (a FIFO): name a plain text job file of at most 1 MiB"
    )
    assert guard.violations == []


# ----------------------------------------------------------------------------- intake


def test_a_refused_folder_is_one_rejected_version_until_it_is_fixed(
    job: JobConfig, outside: Path, clock: RecordingClock
) -> None:
    inbox_dir = job.job.inbox
    (inbox_dir / "smuggled").symlink_to(outside)
    os.utime(outside / "secret.png", (T0, T0))
    os.utime(outside, (T0, T0))  # photos moved in later keep their old times
    with SqliteStore(job.job.outbox.parent / "state.db") as store:
        first = intake(job, store, clock)
        again = intake(job, store, clock)
        (inbox_dir / "smuggled").unlink()
        outside.rename(inbox_dir / "smuggled")  # fixed the way the message says
        fixed = intake(job, store, clock)
        versions = [(row.version, row.state, row.error) for row in fixed.new_versions]

    (row,) = first.new_versions
    assert (row.name, row.state, row.image_count) == ("smuggled", REJECTED, 0)
    assert row.error == (
        f"{inbox_dir / 'smuggled'} is a link to a folder outside the inbox: move the photos "
        "into the inbox itself"
    )
    assert again.new_versions == [] and again.waiting == []
    assert versions == [(2, VALIDATED, None)]


# ----------------------------------------------------------------------------- a whole pass


def build_hostile_inbox(inbox_dir: Path, outside: Path) -> dict[str, str]:
    """Every hazard next to a good subject; returns what each refused thing must say."""
    subject_with_photos(inbox_dir, "alice", 1, 2)
    fifo_toml = subject_with_photos(inbox_dir, "toml_fifo", 3)
    os.mkfifo(fifo_toml / "subject.toml")
    zero_toml = subject_with_photos(inbox_dir, "toml_zero", 4)
    (zero_toml / "subject.toml").symlink_to("/dev/zero")
    captions = subject_with_photos(inbox_dir, "caption_fifo", 5, 6)
    os.mkfifo(captions / "p5.txt")
    photos = subject_with_photos(inbox_dir, "photo_fifo", 7)
    os.mkfifo(photos / "pipe.png")
    (photos / "zero.png").symlink_to("/dev/zero")
    (inbox_dir / "smuggled").symlink_to(outside)
    return {
        "toml_fifo": f"{fifo_toml / 'subject.toml'} is not a regular file (a FIFO): replace "
        "it with a plain text file (at most 256 KiB)",
        "toml_zero": f"{zero_toml / 'subject.toml'} is a link that points outside the inbox: "
        "replace it with a plain text file (at most 256 KiB)",
        "smuggled": f"{inbox_dir / 'smuggled'} is a link to a folder outside the inbox: move "
        "the photos into the inbox itself",
        "p5.png": "p5.png: its caption file p5.txt is not a regular file (a FIFO): replace it "
        "with a plain text file (at most 8 KiB), or delete it",
        "pipe.png": "pipe.png is not a regular file (a FIFO): replace it with the photo itself, "
        "or remove it",
        "zero.png": "zero.png is a link that points outside the inbox: copy the photo itself "
        "into the folder",
    }


def uploaded_hashes(emulator: EmulatorHandle) -> set[str]:
    return {a.sha256 for a in emulator.emulator.store.assets.values() if a.uploaded}


@pytest.mark.timeout(60)
async def test_a_pass_over_a_hostile_inbox_ends_and_says_why(
    tmp_path: Path, outside: Path, emulator: EmulatorHandle
) -> None:
    job = load_job(write_job(tmp_path, prompts=1, image_num=1))
    inbox_dir = job.job.inbox
    expected = build_hostile_inbox(inbox_dir, outside)
    good = {seed: hashlib.sha256(photo(seed)).hexdigest() for seed in (1, 2, 6, 7)}
    guard = guarding(inbox_dir, outside, Path("/dev/zero"))
    settings = fast_settings(emulator.base_url, tmp_path / "state")

    first = await Runner(job, settings).run_once(max_wait=20)
    second = await Runner(job, settings).run_once(max_wait=20)

    assert first.signal is None and first.exit_code == EXIT_REJECTED
    summary = {s.name: s for s in first.subjects}
    for name in ("toml_fifo", "toml_zero", "smuggled"):
        assert (summary[name].state, summary[name].error) == (REJECTED, expected[name])
    refused = {r["file"]: r["reason"] for name in ("caption_fifo", "photo_fifo")
               for r in summary[name].rejected_files}
    assert refused == {file: expected[file] for file in ("p5.png", "pipe.png", "zero.png")}
    for name in ("alice", "caption_fifo", "photo_fifo"):
        assert summary[name].state == DONE and summary[name].error is None, summary[name]
    with SqliteStore(tmp_path / "state" / "state.db") as store:
        stored = {s.name: s for s in store.subjects("test")}
        assert {n: s.error for n, s in stored.items() if s.state == REJECTED} == {
            name: expected[name] for name in ("toml_fifo", "toml_zero", "smuggled")
        }
        assert {r.name: r.reason for r in store.rejections(stored["photo_fifo"].id)} == {
            file: expected[file] for file in ("pipe.png", "zero.png")
        }
    # Nothing outside the inbox was read, blocked on, or sent.
    assert guard.violations == []
    assert uploaded_hashes(emulator) == set(good.values())
    # The second pass sees the same inbox and changes nothing.
    assert second.signal is None
    assert [(s.name, s.version, s.state, s.error) for s in second.subjects] == [
        (s.name, s.version, s.state, s.error) for s in first.subjects
    ]
    assert emulator.emulator.counters_snapshot()["trainings_created"]["total"] == 3
    assert guard.violations == []


# ----------------------------------------------------------------------------- after intake


async def test_a_photo_swapped_for_a_fifo_after_intake_is_refused_at_upload(
    inbox_dir: Path,
) -> None:
    fifo = inbox_dir / "swapped.png"
    os.mkfifo(fifo)
    with pytest.raises(RefusedFile, match="a FIFO"):
        file_sha256(fifo)
    with pytest.raises(RefusedFile, match="a FIFO"):
        async with open_reader(fifo):
            pass


async def test_a_retried_upload_sends_the_photo_it_checked_not_what_the_name_leads_to(
    hostile: Hostile, workspace: Workspace
) -> None:
    inbox_dir = workspace.ws / "inbox"
    alice = inbox_dir / "alice"
    photos = {p.read_bytes() for p in alice.iterdir()}
    secret = workspace.root / "secret"
    secret.mkdir()
    for path in alice.iterdir():
        (secret / path.name).write_bytes(b"TOP SECRET\n")
    bodies: list[bytes] = []

    async def bucket(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        if len(bodies) == 1:  # the first PUT fails just as the folder is swapped
            alice.rename(inbox_dir / ".alice-moved")
            alice.symlink_to(secret)
            return web.Response(status=503)
        return web.Response(status=200)

    hostile.serve(r"^/_s3/training/", bucket)
    await workspace.run(hostile.base_url, max_wait=5)

    assert len(bodies) == len(photos) + 1  # one retry
    assert set(bodies) == photos


def test_validate_shows_refused_folders_and_bad_subject_files(
    tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_file = write_job(tmp_path, prompts=1)
    inbox = tmp_path / "inbox"
    subject_with_photos(inbox, "alice", 1, 2)
    (inbox / "smuggled").symlink_to(outside, target_is_directory=True)
    piped = subject_with_photos(inbox, "piped", 3)
    os.mkfifo(piped / "subject.toml")
    assert main(["validate", str(job_file)]) == 3
    out = capsys.readouterr().out
    assert "smuggled: rejected" in out and "outside the inbox" in out
    assert "piped: rejected" in out and "not a regular file (a FIFO)" in out
    assert "alice: accepted" in out
