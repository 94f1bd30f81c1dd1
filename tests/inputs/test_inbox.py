"""Inbox scanning (readiness by settle time or marker) and watching."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.inputs.inbox import (
    RESERVED_NAMES,
    SubjectFolder,
    _touched_subjects,
    scan_inbox,
    watch_inbox,
)

T0 = 1_700_000_000.0


def set_mtimes(root: Path, when: float) -> None:
    """Give everything under ``root`` (and ``root`` itself) the modification time ``when``."""
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in [*files, *dirs]:
            os.utime(Path(folder) / name, (when, when), follow_symlinks=False)
    os.utime(root, (when, when))


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def add_subject(inbox: Path, name: str, files: tuple[str, ...] = ("a.png",)) -> Path:
    folder = inbox / name
    folder.mkdir()
    for file in files:
        (folder / file).write_bytes(b"photo")
    return folder


def test_ready_once_settled(inbox: Path) -> None:
    alice = add_subject(inbox, "alice")
    set_mtimes(alice, T0)

    early = scan_inbox(inbox, settle_seconds=30, now=T0 + 3)
    later = scan_inbox(inbox, settle_seconds=30, now=T0 + 45)

    assert early == [
        SubjectFolder("alice", alice, False, "settling: last change 3 s ago, waiting 30 s", T0)
    ]
    assert later == [SubjectFolder("alice", alice, True, "settled: no change for 45 s", T0)]
    assert scan_inbox(inbox, settle_seconds=30, now=T0 + 30)[0].ready  # boundary: ready


def test_the_newest_change_anywhere_in_the_folder_counts(inbox: Path) -> None:
    alice = add_subject(inbox, "alice", ("a.png", "b.png"))
    (alice / "nested" / "deeper").mkdir(parents=True)
    (alice / "nested" / "deeper" / "c.png").write_bytes(b"photo")
    set_mtimes(alice, T0)

    os.utime(alice / "nested" / "deeper" / "c.png", (T0 + 20, T0 + 20))
    (folder,) = scan_inbox(inbox, settle_seconds=30, now=T0 + 40)
    assert (folder.ready, folder.last_change) == (False, T0 + 20)
    assert folder.reason == "settling: last change 20 s ago, waiting 30 s"

    set_mtimes(alice, T0)
    os.utime(alice, (T0 + 25, T0 + 25))  # a file added, removed or renamed in the folder
    (folder,) = scan_inbox(inbox, settle_seconds=30, now=T0 + 40)
    assert (folder.ready, folder.last_change) == (False, T0 + 25)

    assert scan_inbox(inbox, settle_seconds=30, now=T0 + 55)[0].ready


def test_a_change_in_the_future_means_just_changed(inbox: Path) -> None:
    alice = add_subject(inbox, "alice")
    set_mtimes(alice, T0 + 100)

    (folder,) = scan_inbox(inbox, settle_seconds=30, now=T0)

    assert not folder.ready
    assert folder.reason == "settling: last change 0 s ago, waiting 30 s"


def test_empty_folder_is_not_ready(inbox: Path) -> None:
    empty = add_subject(inbox, "empty", ())
    (empty / ".DS_Store").write_bytes(b"litter")
    set_mtimes(empty, T0)

    (folder,) = scan_inbox(inbox, settle_seconds=30, now=T0 + 100)

    assert (folder.ready, folder.reason) == (False, "empty: waiting for photos")


def test_marker_mode(inbox: Path) -> None:
    alice = add_subject(inbox, "alice")
    set_mtimes(alice, T0)

    (waiting,) = scan_inbox(inbox, settle_seconds=30, require_marker=True, now=T0 + 1000)
    (alice / ".ready").touch()
    set_mtimes(alice, T0 + 5)
    (marked,) = scan_inbox(inbox, settle_seconds=30, require_marker=True, now=T0 + 5)

    assert not waiting.ready
    assert waiting.reason == (f"waiting for .ready marker (touch {alice / '.ready'} when complete)")
    assert marked.ready and marked.reason == ".ready marker present"
    assert marked.last_change == T0 + 5


def test_hidden_folders_litter_and_plain_files_are_not_subjects(inbox: Path) -> None:
    for name in ["bob", "alice", "émile et zoé", ".git", ".Trashes", "__MACOSX", "@eaDir"]:
        add_subject(inbox, name)
    (inbox / "notes.txt").write_text("not a subject", encoding="utf-8")
    (inbox / ".DS_Store").write_bytes(b"")
    (inbox / "Thumbs.db").write_bytes(b"")
    set_mtimes(inbox, T0)

    found = scan_inbox(inbox, settle_seconds=0, now=T0)

    assert [folder.name for folder in found] == ["alice", "bob", "émile et zoé"]
    assert all(folder.ready and folder.path.parent == inbox for folder in found)


@pytest.mark.parametrize("name", ["report.html", "report.json", "Report.HTML"])
def test_a_folder_named_like_the_report_is_refused(inbox: Path, name: str) -> None:
    folder = add_subject(inbox, name)
    set_mtimes(folder, T0)

    (found,) = scan_inbox(inbox, settle_seconds=0, now=T0)

    assert (found.name, found.ready) == (name, False)
    assert found.refused == found.reason == (
        f"{folder} is named like the {name.lower()} the pipeline writes next to the "
        "subjects' results in the outbox: rename the folder"
    )


def test_the_reserved_names_are_the_files_the_report_writes() -> None:
    from pipeline.views.report import REPORT_HTML, REPORT_JSON

    assert {REPORT_HTML, REPORT_JSON} == RESERVED_NAMES


def test_folders_shown_alike_never_share_a_subject(inbox: Path) -> None:
    literal = add_subject(inbox, "caf\\xe9")  # an ASCII backslash: shown as it is
    raw = Path(os.fsdecode(os.fsencode(inbox) + b"/caf\xe9"))  # not UTF-8: shown the same
    raw.mkdir()
    (raw / "a.png").write_bytes(b"photo")
    taken = add_subject(inbox, "caf\\xe9 (2)")  # the name a duplicate would get first
    for folder in (literal, raw, taken):
        set_mtimes(folder, T0)

    found = {f.name: f for f in scan_inbox(inbox, settle_seconds=0, now=T0)}

    assert sorted(found) == ["caf\\xe9", "caf\\xe9 (2)", "caf\\xe9 (3)"]
    assert found["caf\\xe9"].path == literal and found["caf\\xe9"].ready
    assert found["caf\\xe9 (2)"].path == taken and found["caf\\xe9 (2)"].ready
    duplicate = found["caf\\xe9 (3)"]
    assert duplicate.path == raw and not duplicate.ready
    assert duplicate.refused == (
        f"{literal} (a name that is not valid UTF-8) is shown as caf\\xe9, like "
        f"{literal}: two folders cannot be one subject; rename this one to a name of its own"
    )


def test_missing_inbox_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match="nowhere' does not exist") as caught:
        scan_inbox(missing, settle_seconds=30, now=T0)
    assert f"mkdir -p {missing}" in str(caught.value)

    a_file = tmp_path / "file"
    a_file.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not a folder"):
        scan_inbox(a_file, settle_seconds=30, now=T0)


def test_touched_subjects_maps_paths_to_subject_names(inbox: Path) -> None:
    add_subject(inbox, "alice")
    (inbox / "notes.txt").write_text("x", encoding="utf-8")
    paths = [
        str(inbox / "alice" / "a.png"),
        str(inbox / "bob"),  # a folder that was removed: still worth a rescan
        str(inbox / "carol" / "sub" / "x.png"),
        str(inbox / ".hidden" / "x.png"),
        str(inbox / "notes.txt"),
        str(inbox.parent / "elsewhere.png"),
    ]

    assert _touched_subjects(inbox, paths) == {"alice", "bob", "carol"}


async def test_watch_inbox_yields_touched_subjects(inbox: Path) -> None:
    add_subject(inbox, "alice")
    stop = asyncio.Event()
    seen: list[set[str]] = []

    async def consume() -> None:
        async for subjects in watch_inbox(inbox, stop_event=stop, debounce_ms=50):
            seen.append(subjects)
            if "alice" in subjects:
                stop.set()

    watcher = asyncio.create_task(consume())
    # The watcher starts asynchronously: keep making changes until one is reported.
    for attempt in range(60):
        (inbox / "alice" / f"new_{attempt}.png").write_bytes(b"photo")
        (inbox / "notes.txt").write_text(str(attempt), encoding="utf-8")
        (inbox / ".tmp").mkdir(exist_ok=True)
        done, _ = await asyncio.wait({watcher}, timeout=0.05)
        if done:
            break
    await asyncio.wait_for(watcher, timeout=2)

    assert seen and "alice" in seen[-1]
    assert set().union(*seen) == {"alice"}


class Batches:
    """The batches ``watch_inbox`` yields, collected by a task, awaited one by one."""

    def __init__(self, inbox: Path) -> None:
        self.stop = asyncio.Event()
        self.queue: asyncio.Queue[set[str]] = asyncio.Queue()
        self.task = asyncio.create_task(self._consume(inbox))

    async def _consume(self, inbox: Path) -> None:
        async for subjects in watch_inbox(inbox, stop_event=self.stop, debounce_ms=20):
            self.queue.put_nowait(subjects)

    async def until(self, name: str, change: Callable[[int], None]) -> None:
        """Make ``change(n)`` (n = 0, 1, ...) until a batch names ``name``: the watcher
        starts, and restarts, asynchronously. Bounded: about 3 s."""
        for attempt in range(60):
            change(attempt)
            try:
                subjects = await asyncio.wait_for(self.queue.get(), timeout=0.05)
            except TimeoutError:
                continue
            if name in subjects:
                return
        raise AssertionError(f"no change reported for {name}")

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout=2)


async def test_a_new_subject_folder_is_watched_once_it_appears(inbox: Path) -> None:
    add_subject(inbox, "alice")
    batches = Batches(inbox)
    try:
        await batches.until("alice", lambda n: (inbox / "alice" / f"{n}.png").write_bytes(b""))
        await batches.until("bob", lambda n: (inbox / "bob").mkdir(exist_ok=True))
        # Files inside bob/ are seen only through a watch of bob/ itself: the restarted one.
        await batches.until("bob", lambda n: (inbox / "bob" / f"{n}.png").write_bytes(b""))
    finally:
        await batches.close()


async def test_a_folder_link_inside_the_inbox_is_watched_at_its_target(inbox: Path) -> None:
    (inbox / ".staging").mkdir()
    add_subject(inbox, ".staging/carol")
    (inbox / "carol").symlink_to(Path(".staging") / "carol")
    batches = Batches(inbox)
    try:
        await batches.until(
            "carol", lambda n: (inbox / ".staging" / "carol" / f"{n}.png").write_bytes(b"")
        )
    finally:
        await batches.close()


async def test_watch_inbox_stops_when_asked(inbox: Path) -> None:
    stop = asyncio.Event()

    async def consume() -> list[set[str]]:
        return [subjects async for subjects in watch_inbox(inbox, stop_event=stop)]

    watcher = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    stop.set()

    assert await asyncio.wait_for(watcher, timeout=2) == []


def test_missing_inbox_names_the_job_file_and_its_field(tmp_path: Path) -> None:
    missing, job_file = tmp_path / "nowhere", tmp_path / "jobs" / "portraits.toml"
    with pytest.raises(ConfigError) as caught:
        scan_inbox(missing, settle_seconds=30, now=T0, job_file=job_file)
    message = str(caught.value)
    assert message == (
        f"{job_file}: job.inbox = '{missing}' does not exist or is not a folder: create it "
        f"(mkdir -p {missing}) or set job.inbox in {job_file} to the right folder"
    )
    assert "  " not in message


async def test_watch_missing_inbox_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        async for _ in watch_inbox(tmp_path / "nowhere"):
            pass
