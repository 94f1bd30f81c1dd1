"""The inbox: one folder per subject, and when each folder is ready to be validated.

A subject folder is ready once it has settled (nothing in it changed for ``settle_seconds``)
or, in marker mode, once it holds a ``.ready`` file. :func:`scan_inbox` answers that for
every folder at one moment; :func:`watch_inbox` says which subjects were touched, so a
long-running watcher knows when to scan again.

    >>> for folder in scan_inbox(Path("inbox"), settle_seconds=30, now=clock.now()):
    ...     print(folder.name, folder.ready, folder.reason)
    alice True settled: no change for 95 s
    bob False settling: last change 3 s ago, waiting 30 s

Everything in the inbox is untrusted. A subject folder that is a link is followed only when
its target stays inside the inbox and is not already a subject of its own (the same photos
would be trained twice); a folder of more than :data:`~pipeline.inputs.dataset.MAX_FOLDER_ENTRIES`
entries is not walked further. A subject's name is its folder's name as text, and each
subject has its own: a folder named like a file the pipeline writes next to the subjects'
results (:data:`RESERVED_NAMES`), or whose name reads the same as an earlier folder's (a
name that is not UTF-8, ``caf\\xe9``, and one literally spelt ``caf\\xe9``), is refused.
Such a folder comes back with ``refused`` set to a sentence naming it and saying what to do;
intake records it as a rejected subject (a refused duplicate under a name of its own,
``caf\\xe9 (2)``, so that it never becomes a version of the other folder's subject).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shlex
import stat
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from watchfiles import awatch

from pipeline.api.contract import MAX_TRAINING_IMAGES
from pipeline.errors import ConfigError
from pipeline.inputs.dataset import MAX_FOLDER_ENTRIES, READY_MARKER, display_name, is_ignored_name

__all__ = ["RESERVED_NAMES", "SubjectFolder", "scan_inbox", "watch_inbox"]

#: What the pipeline writes at the top of ``outbox/<job>``, next to the subjects' folders
#: (see :mod:`pipeline.views.report`); compared case-insensitively, since an outbox may live
#: on a file system that does. Its state folder is hidden, so never a subject's name.
RESERVED_NAMES: Final = frozenset({"report.html", "report.json"})


@dataclass(frozen=True, slots=True)
class SubjectFolder:
    """One subject folder of the inbox and whether it is ready.

    ``reason`` says why it is (not) ready; ``last_change`` is the newest modification time
    found in the folder (seconds since the epoch). ``refused`` is set, and ``ready`` False,
    when the folder must not be read at all: it says why and what to do.
    """

    name: str
    path: Path
    ready: bool
    reason: str
    last_change: float
    refused: str | None = None


@dataclass(frozen=True, slots=True)
class _Activity:
    last_change: float
    files: int
    vanished: bool  # something disappeared during the walk: it is still changing
    too_many: bool = False  # more than MAX_FOLDER_ENTRIES: the walk stopped there


def _missing_inbox(inbox: Path, job_file: Path | None = None) -> ConfigError:
    """The inbox is not there: named as the job file does (``job.inbox``), with what to do."""
    where = f"{job_file}: job.inbox" if job_file is not None else "the job's inbox"
    change = f"set job.inbox in {job_file}" if job_file is not None else "set job.inbox"
    return ConfigError(
        f"{where} = {str(inbox)!r} does not exist or is not a folder: create it "
        f"(mkdir -p {shlex.quote(str(inbox))}) or {change} to the right folder"
    )


def _activity(folder: Path) -> _Activity:
    """Newest mtime of the folder and of everything below it, and how many files there are.

    A directory's own mtime moves when entries are created, removed or renamed in it, so the
    set of names is covered too. Symlinks are not followed. At most ``MAX_FOLDER_ENTRIES``
    entries are looked at, over all levels.
    """
    newest = os.stat(folder, follow_symlinks=True).st_mtime
    files = 0
    vanished = False
    budget = MAX_FOLDER_ENTRIES
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as entries:
                listed = list(itertools.islice(entries, budget + 1))
        except FileNotFoundError:
            vanished = True
            continue
        except OSError:
            continue  # an unreadable subfolder: validation reports the files it can see
        budget -= len(listed)
        if budget < 0:
            return _Activity(newest, files, vanished, too_many=True)
        for entry in listed:
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                vanished = True
                continue
            newest = max(newest, info.st_mtime)
            if stat.S_ISDIR(info.st_mode):
                pending.append(Path(entry.path))
            elif not is_ignored_name(entry.name):
                files += 1
    return _Activity(newest, files, vanished)


def _refused(name: str, path: Path, reason: str, now: float) -> SubjectFolder:
    return SubjectFolder(name, path, False, reason, now, refused=reason)


def _judge(
    name: str,
    path: Path,
    walk: Path,
    *,
    settle_seconds: float,
    require_marker: bool,
    now: float,
) -> SubjectFolder:
    """``walk`` is what ``path`` is: itself, or the checked target of a link."""
    try:
        activity = _activity(walk)
    except OSError as exc:
        reason = f"cannot be read ({exc.strerror or exc}): make it readable by the pipeline"
        return SubjectFolder(name, path, False, reason, now)
    if activity.too_many:
        return _refused(
            name,
            path,
            f"{path} holds more than {MAX_FOLDER_ENTRIES:,} files and folders, and a subject "
            f"is at most {MAX_TRAINING_IMAGES} photos: move what is not its photos out of it",
            now,
        )
    last = activity.last_change
    if require_marker:
        if (walk / READY_MARKER).is_file():
            return SubjectFolder(name, path, True, f"{READY_MARKER} marker present", last)
        reason = f"waiting for {READY_MARKER} marker (touch {path / READY_MARKER} when complete)"
        return SubjectFolder(name, path, False, reason, last)
    if activity.vanished:
        reason = f"settling: files are still moving, waiting {settle_seconds:g} s"
        return SubjectFolder(name, path, False, reason, now)
    age = max(0.0, now - last)
    if age < settle_seconds:
        reason = f"settling: last change {age:.0f} s ago, waiting {settle_seconds:g} s"
        return SubjectFolder(name, path, False, reason, last)
    if activity.files == 0:
        return SubjectFolder(name, path, False, "empty: waiting for photos", last)
    return SubjectFolder(name, path, True, f"settled: no change for {age:.0f} s", last)


def _link_refusal(
    path: Path, target: Path, root: Path, subjects: set[Path], claimed: dict[Path, Path]
) -> str | None:
    """Why the subject folder link ``path`` (to ``target``) is not followed, if it is not.

    ``subjects`` are the real subject folders, ``claimed`` the targets of the links followed
    so far (by name order): the first link to a folder wins over later ones.
    """
    if not target.is_relative_to(root):
        return (
            f"{path} is a link to a folder outside the inbox: move the photos into the inbox "
            "itself"
        )
    if target == root:
        return f"{path} is a link to the inbox itself: remove the link"
    if target in subjects:
        return (
            f"{path} is a link to {target.name}/, another subject of the inbox, whose photos "
            "are trained there already: remove the link, or move the photos here"
        )
    if target in claimed:
        return (
            f"{path} is a link to the same folder as {claimed[target].name}: its photos are "
            "trained there already; remove one of the two links"
        )
    return None


def _shown(path: Path) -> str:
    """A folder of the inbox as text, saying so when its name is not valid UTF-8."""
    shown = display_name(path.name)
    note = " (a name that is not valid UTF-8)" if shown != path.name else ""
    return f"{path.parent / shown}{note}"


def _name_refusal(path: Path, shown: str, first: dict[str, Path]) -> str | None:
    """Why the folder ``path``, shown as ``shown``, cannot be a subject of that name, if it
    cannot; ``first`` holds the folders that took their names so far (by name order)."""
    if shown.casefold() in RESERVED_NAMES:
        return (
            f"{_shown(path)} is named like the {shown.lower()} the pipeline writes next to the "
            "subjects' results in the outbox: rename the folder"
        )
    if shown in first:
        return (
            f"{_shown(path)} is shown as {shown}, like {_shown(first[shown])}: two folders "
            "cannot be one subject; rename this one to a name of its own"
        )
    return None


def _own_name(shown: str, taken: set[str]) -> str:
    """``shown (2)``, ``shown (3)``...: the first that names no other folder of the inbox."""
    number = 2
    while (name := f"{shown} ({number})") in taken:
        number += 1
    return name


def scan_inbox(
    inbox: Path, *, settle_seconds: float, require_marker: bool = False, now: float,
    job_file: Path | None = None,
) -> list[SubjectFolder]:
    """Every subject folder directly under ``inbox``, sorted by name, with its readiness.

    Hidden folders, OS litter and plain files at the top level are not subjects. Without
    ``require_marker`` a folder is ready once nothing in it changed for ``settle_seconds``
    before ``now`` and it holds at least one file; with it, once a ``.ready`` file exists.
    A link to a folder is a subject only when it stays inside the inbox and leads to no
    other subject; otherwise it comes back ``refused``, as does a folder named like what the
    pipeline writes in the outbox or shown like an earlier folder.

    Raises :class:`~pipeline.errors.ConfigError` when the inbox is missing, naming
    ``job_file`` (the job file whose ``job.inbox`` it is) when given.
    """
    try:
        with os.scandir(inbox) as entries:
            listed = sorted(
                ((entry.name, Path(entry.path), entry.is_symlink()) for entry in entries
                 if not is_ignored_name(entry.name) and entry.is_dir()),
            )
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise _missing_inbox(inbox, job_file) from exc
    except OSError as exc:
        raise ConfigError(
            f"inbox {inbox} cannot be read ({exc.strerror or exc}): make it readable by the "
            "pipeline's user"
        ) from exc
    root = Path(os.path.realpath(inbox))
    subjects = {root / name for name, _, is_link in listed if not is_link}
    claimed: dict[Path, Path] = {}
    taken = {display_name(name) for name, _, _ in listed}
    first: dict[str, Path] = {}
    found = []
    for name, path, is_link in listed:
        shown = display_name(name)
        refusal = _name_refusal(path, shown, first)
        if refusal is not None:
            if shown in first:
                shown = _own_name(shown, taken)
                taken.add(shown)
            found.append(_refused(shown, path, refusal, now))
            continue
        first[shown] = path
        walk = path
        if is_link:
            walk = Path(os.path.realpath(path))
            refusal = _link_refusal(path, walk, root, subjects, claimed)
            if refusal is not None:
                found.append(_refused(shown, path, refusal, now))
                continue
            claimed[walk] = path
        found.append(_judge(shown, path, walk, settle_seconds=settle_seconds,
                            require_marker=require_marker, now=now))
    return found


def _touched_subjects(inbox: Path, paths: Iterable[str]) -> set[str]:
    names: set[str] = set()
    for raw in paths:
        try:
            parts = Path(raw).relative_to(inbox).parts
        except ValueError:
            continue
        if not parts or is_ignored_name(parts[0]):
            continue
        if len(parts) == 1 and (inbox / parts[0]).is_file():
            continue  # a plain file at the top level is not a subject
        names.add(display_name(parts[0]))
    return names


def _watched_folders(root: Path) -> dict[Path, str]:
    """The folders to watch, one level each, and the subject each stands for: the inbox's
    subject folders, and the target of each folder link that stays inside the inbox (events
    come from where the files really are). A link leading out of the inbox is not watched."""
    try:
        with os.scandir(root) as entries:
            listed = sorted(
                (entry.is_symlink(), entry.name) for entry in entries
                if not is_ignored_name(entry.name) and entry.is_dir()
            )
    except OSError:
        return {}  # the inbox itself is gone: the watch of it ends
    folders: dict[Path, str] = {}
    for is_link, name in listed:  # real folders first: a link to one does not rename it
        path = root / name
        if is_link:
            path = Path(os.path.realpath(path))
            if path == root or not path.is_relative_to(root):
                continue
        folders.setdefault(path, display_name(name))
    return folders


def _touched(root: Path, folders: dict[Path, str], paths: Iterable[str]) -> set[str]:
    names: set[str] = set()
    for raw in paths:
        name = folders.get(Path(raw).parent)
        if name is not None:
            names.add(name)
        else:
            names |= _touched_subjects(root, (raw,))
    return names


async def watch_inbox(
    inbox: Path, *, stop_event: asyncio.Event | None = None, debounce_ms: int = 500,
    job_file: Path | None = None,
) -> AsyncIterator[set[str]]:
    """Yield the names of the subjects touched by each batch of file-system changes.

    A name is yielded when a file directly in ``inbox/<name>/`` (where photos are), or the
    folder itself, is created, modified or deleted; the caller scans again to learn whether
    it is ready. Ends when ``stop_event`` is set (within about 50 ms). Raises
    :class:`~pipeline.errors.ConfigError` when the inbox is missing (naming ``job_file``
    when given).

    Nothing is watched recursively: the inbox and each subject folder are watched one level
    deep, and the watch starts again whenever the set of subject folders changes, so a link
    out of the inbox (to ``/usr``, to ``/``) costs no watch at all.

        >>> async for subjects in watch_inbox(Path("inbox"), stop_event=stopping):
        ...     await advance(subjects)
    """
    if not inbox.is_dir():
        raise _missing_inbox(inbox, job_file)
    root = Path(os.path.realpath(inbox))
    stop = stop_event or asyncio.Event()
    while not stop.is_set():
        folders = _watched_folders(root)
        try:
            async with contextlib.aclosing(awatch(
                root, *folders, watch_filter=None, debounce=debounce_ms, stop_event=stop,
                recursive=False, ignore_permission_denied=True,
            )) as batches:
                async for changes in batches:
                    touched = _touched(root, folders, (path for _change, path in changes))
                    if touched:
                        yield touched
                    if _watched_folders(root) != folders:
                        break  # watch the new set of folders
        except FileNotFoundError as exc:  # a folder went away while its watch was set up
            if not root.is_dir():
                raise _missing_inbox(inbox, job_file) from exc
