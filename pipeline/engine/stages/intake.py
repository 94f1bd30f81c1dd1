"""Intake: find ready subject folders, validate them, record each new version.

A folder is validated again only when something in it changed since intake last looked at
it: each version keeps in ``inbox_seen`` the newest change the scan saw in its folder, before
validating it (a photo added while the folder is validated is newer, so it is looked at on
the next pass; see :func:`_seen_stamp`). A subject whose photos change after its training
was paid for becomes a new version only when the job sets ``retrain_on_change``; otherwise
it keeps its trained version, with a warning that says so, and its folder is not validated
again until it changes again (or the job lifts the hold).

Each version is recorded with its settings frozen (:meth:`SubjectSettings.freeze`: the job
file with the folder's ``subject.toml`` applied, the rendered prompts, the captions) as they
were read for its validation, and the bytes of its img2img prompts' init images kept; the
later stages read them from the store only.

A folder the inbox refuses to read (a link out of the inbox, far too many entries) and a
``subject.toml`` that cannot be used are each recorded once as a rejected version whose
error says why; fixing the problem makes a new version.

An intake is read work, then recording: scanning the inbox and validating folders reads
and decodes files (:func:`_scan`, :func:`_check_all`: no state), recording writes the
store. The runner calls :func:`intake_off_loop`, which does the reading in worker threads
so that the event loop, and its signal handlers, keep running; a stopped pass stops it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from ...clock import Clock
from ...errors import ConfigError
from ...inputs.dataset import DatasetReport, Stopped, validate_subject
from ...inputs.inbox import SubjectFolder, scan_inbox
from ...inputs.photo_cache import MeasureCache
from ...jobfile.loading import JobConfig, SubjectSettings
from ...store.protocol import NewImage, StateStore, SubjectRow
from ...store.states import COMMITTED_STATES, REJECTED, VALIDATED
from ..live import current_meter

log = structlog.get_logger(__name__)

#: Folders validated at once during an intake (bounded by the machine's cores).
MAX_CHECK_THREADS = 4
#: Fingerprint prefixes of versions recorded without validating the folder.
CONFIG_ERROR_PREFIX = "config-"
REFUSED_PREFIX = "refused-"
#: Seconds a file's modification time may lag behind the clock: file systems keep coarse
#: times (FAT two seconds, others a clock tick), so a file written just after a scan can
#: carry a time from just before it. See :func:`_seen_stamp`.
MTIME_SLACK_SECONDS = 2.0
#: The warning on a trained version whose folder changed since (see :func:`_take_in`).
HELD_BACK_NOTE = (
    "photos changed after this subject was trained; set retrain_on_change = true in the job "
    "to train the new version"
)

T = TypeVar("T")


@dataclass
class IntakeResult:
    """What one pass over the inbox did."""

    new_versions: list[SubjectRow] = field(default_factory=list)
    waiting: list[SubjectFolder] = field(default_factory=list)
    held_back: list[str] = field(default_factory=list)


_Todo = list[tuple[SubjectFolder, "SubjectRow | None"]]


def intake(
    job: JobConfig, store: StateStore, clock: Clock, *, cache: MeasureCache | None = None
) -> IntakeResult:
    """Scan the job's inbox once and record every subject version that is new."""
    result = IntakeResult()
    scanned_at = clock.now()
    todo = _plan(job, store, clock, _scan(job, scanned_at), result)
    checked_all = _check_all(job, [f for f, _ in todo], cache)
    for planned, checked in zip(todo, checked_all, strict=True):
        _record_one(job, store, clock, scanned_at, planned, checked, result)
    return result


async def intake_off_loop(
    job: JobConfig, store: StateStore, clock: Clock, *, stopping: asyncio.Event,
    on_version: Callable[[SubjectRow], None] | None = None,
    cache: MeasureCache | None = None,
) -> IntakeResult:
    """:func:`intake` with its reading done in worker threads; the store is written here.

    Each folder is recorded as soon as it is checked, and ``on_version`` told of each new
    version then: its uploads can start while the other folders are still being read.
    Once ``stopping`` is set, validation stops before its next file and what it had not
    yet recorded is not (the next pass looks again).
    """
    result = IntakeResult()
    stop = threading.Event()
    scanned_at = clock.now()
    folders = await _in_thread(lambda: _scan(job, scanned_at), stopping, stop)
    if folders is None:
        return result
    todo = _plan(job, store, clock, folders, result)
    meter = current_meter()
    if meter is not None:
        meter.set_waiting([folder.name for folder in result.waiting])
    if not todo:
        return result
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue[tuple[int, _Checked | None]] = asyncio.Queue()

    def check_each() -> bool:
        for index, checked in enumerate(_check_all(job, [f for f, _ in todo], cache, stop)):
            loop.call_soon_threadsafe(arrived.put_nowait, (index, checked))
        return True

    reading = asyncio.ensure_future(_in_thread(check_each, stopping, stop))
    try:
        while not (reading.done() and arrived.empty()):
            waiting = asyncio.ensure_future(arrived.get())
            await asyncio.wait({waiting, reading}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                waiting.cancel()
                continue
            if stopping.is_set():
                continue  # found after the stop: not recorded
            index, checked = waiting.result()
            row = _record_one(job, store, clock, scanned_at, todo[index], checked, result)
            if row is not None and on_version is not None:
                on_version(row)
    finally:
        if not reading.done():
            stop.set()
        await asyncio.gather(reading, return_exceptions=True)
    reading.result()  # a failure of the reading itself is not swallowed
    return result


async def _in_thread(
    work: Callable[[], T], stopping: asyncio.Event, stop: threading.Event
) -> T | None:
    """``work()`` in a worker thread, or None when ``stopping`` is set first: ``stop`` then
    tells the worker to end, and it is waited for (a thread cannot be cancelled)."""
    if stopping.is_set():
        return None

    def run() -> T | None:
        try:
            return work()
        except Stopped:
            return None

    task = asyncio.ensure_future(asyncio.to_thread(run))
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        stop.set()
        log.info("intake.stopped", hint="the inbox is looked at again on the next pass")
        await task
        return None
    except BaseException:
        stop.set()  # cancelled: the worker ends after its current file
        raise
    finally:
        stopped.cancel()


def _scan(job: JobConfig, now: float) -> list[SubjectFolder]:
    section = job.job
    return scan_inbox(
        section.inbox, settle_seconds=section.settle_seconds,
        require_marker=section.require_ready_marker, now=now, job_file=job.path,
    )


@dataclass
class InboxLook:
    """The inbox sorted against the store, before anything is checked or recorded."""

    #: Folders the inbox refuses to read, each with its latest version.
    refused: list[tuple[SubjectFolder, SubjectRow | None]] = field(default_factory=list)
    #: Folders still changing (or without their ready marker).
    waiting: list[SubjectFolder] = field(default_factory=list)
    #: Folders to check, each with its latest version.
    todo: _Todo = field(default_factory=list)


def look_at_inbox(job: JobConfig, store: StateStore, folders: list[SubjectFolder]) -> InboxLook:
    """Sort scanned ``folders``: reads the store, writes nothing (``plan`` uses it too)."""
    section = job.job
    look = InboxLook()
    for folder in folders:
        latest = store.latest(section.name, folder.name)
        if folder.refused is not None:
            look.refused.append((folder, latest))
        elif not folder.ready:
            look.waiting.append(folder)
        elif latest is None or not _looked_at(latest, folder, section.retrain_on_change):
            look.todo.append((folder, latest))
    return look


def _plan(
    job: JobConfig, store: StateStore, clock: Clock, folders: list[SubjectFolder],
    result: IntakeResult,
) -> _Todo:
    """Record the refused folders and note the waiting ones; return the ready ones to check
    with their latest version."""
    look = look_at_inbox(job, store, folders)
    for folder, latest in look.refused:
        row = _record_error(job, store, clock, folder, latest, folder.refused or "",
                            prefix=REFUSED_PREFIX)
        if row is not None:
            result.new_versions.append(row)
    result.waiting.extend(look.waiting)
    return look.todo


def _looked_at(latest: SubjectRow, folder: SubjectFolder, retrain_on_change: bool) -> bool:
    """Whether intake has already looked at ``folder`` as it is now, for ``latest``."""
    if latest.fingerprint.startswith(REFUSED_PREFIX):
        return False  # fixed by a move, which keeps old times: always looked at again
    if retrain_on_change and HELD_BACK_NOTE in latest.warning_list:
        return False  # held back by a setting that the job has lifted since
    # A version of an older lora-pipeline has no inbox_seen: it was looked at when recorded.
    seen = latest.inbox_seen if latest.inbox_seen is not None else latest.created_at
    return folder.last_change <= seen


def _record_one(
    job: JobConfig, store: StateStore, clock: Clock, scanned_at: float,
    planned: tuple[SubjectFolder, SubjectRow | None], checked: _Checked | None,
    result: IntakeResult,
) -> SubjectRow | None:
    """Record one checked folder; the new version, if it made one."""
    folder, latest = planned
    if checked is None:
        return None  # not checked: not seen either, so looked at again on the next pass
    row = _take_in(job, store, clock, folder, latest, checked, _seen_stamp(folder, scanned_at))
    if row is None:
        return None
    if latest is not None and row.id == latest.id:
        result.held_back.append(folder.name)
        return None
    result.new_versions.append(row)
    return row


_Checked = tuple[SubjectSettings, DatasetReport] | ConfigError


def _check(
    job: JobConfig, folder: SubjectFolder, cache: MeasureCache | None,
    stop: threading.Event | None = None,
) -> _Checked:
    """A folder's settings and validation report: local reads and decoding, no state.
    Raises :class:`~pipeline.inputs.dataset.Stopped` once ``stop`` is set."""
    try:
        settings = job.subject_settings(folder.path).readable()
    except ConfigError as exc:
        return exc
    training = settings.training
    report = validate_subject(
        folder.path, kind=training.kind, class_word=training.class_word,
        captions=settings.captions, photos=settings.photo_settings(), cache=cache,
        max_images=job.job.max_images, min_images_warning=job.job.min_images_warning,
        root=job.job.inbox, stop=stop,
    )
    return settings, report


def _check_or_skip(
    job: JobConfig, folder: SubjectFolder, cache: MeasureCache | None,
    stop: threading.Event | None,
) -> _Checked | None:
    """:func:`_check`, or None when it failed unexpectedly: that folder is logged as an
    error and looked at again on the next pass; the other folders go on."""
    try:
        return _check(job, folder, cache, stop)
    except Stopped:
        raise
    except Exception as exc:
        log.error("intake.check_failed", subject=folder.name, error=repr(exc),
                  hint="the folder is looked at again on the next pass")
        return None


def _check_all(
    job: JobConfig, folders: list[SubjectFolder], cache: MeasureCache | None,
    stop: threading.Event | None = None,
) -> Iterator[_Checked | None]:
    """:func:`_check_or_skip` of every folder, in order, on a few threads: decoding the
    photos is most of an intake's time, and Pillow and hashlib release the GIL meanwhile."""
    workers = min(len(folders), os.cpu_count() or 1, MAX_CHECK_THREADS)
    if workers <= 1:
        yield from (_check_or_skip(job, folder, cache, stop) for folder in folders)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="intake")
    try:
        yield from pool.map(lambda folder: _check_or_skip(job, folder, cache, stop), folders)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


#: What intake makes of a checked folder (:func:`take_in_outcome`).
NEW, SAME, HELD_BACK, CHANGING, CONFIG_ERROR = "new", "same", "held_back", "changing", "config"


def take_in_outcome(job: JobConfig, latest: SubjectRow | None, checked: _Checked) -> str:
    """What intake makes of a checked folder, given its latest version: a new version
    (``NEW``, rejected or not: the report says), nothing (``SAME`` photos), the trained
    version kept (``HELD_BACK``), a look on the next pass (``CHANGING``), or a version
    rejected for its settings (``CONFIG_ERROR``). Pure: ``plan`` asks it too."""
    if isinstance(checked, ConfigError):
        return CONFIG_ERROR
    report = checked[1]
    if not report.settled:
        return CHANGING
    if latest is not None and latest.fingerprint == version_fingerprint(report):
        return SAME
    if latest is not None and latest.state in COMMITTED_STATES and not job.job.retrain_on_change:
        return HELD_BACK
    return NEW


def _take_in(
    job: JobConfig, store: StateStore, clock: Clock, folder: SubjectFolder,
    latest: SubjectRow | None, checked: _Checked, seen: float,
) -> SubjectRow | None:
    """Record what validating ``folder`` found; ``seen`` is what intake has then looked at
    (:func:`_seen_stamp`). Returns the new version, ``latest`` when it is held back, or
    None when there is nothing new."""
    if latest is not None:
        latest = store.subject(latest.id)  # the engine may have moved it while we validated
    outcome = take_in_outcome(job, latest, checked)
    if isinstance(checked, ConfigError):
        row = _record_error(job, store, clock, folder, latest, str(checked),
                            prefix=CONFIG_ERROR_PREFIX)
        if row is not None:
            return _note_seen(store, row, seen)
        if latest is not None:
            _note_seen(store, latest, seen)
        return None
    settings, report = checked
    if outcome == CHANGING:
        log.info("intake.changing", subject=folder.name)
        return None  # not seen: looked at again on the next pass
    if latest is not None and outcome == SAME:
        # Touched but the same photos: nothing to record; if they are back to the trained
        # ones, the note that they changed is no longer true.
        warnings = [w for w in latest.warning_list if w != HELD_BACK_NOTE]
        if warnings != latest.warning_list:
            latest = store.update_subject(latest.id, now=clock.now(),
                                          warnings=json.dumps(warnings) if warnings else None)
        _note_seen(store, latest, seen)
        return None
    if latest is not None and outcome == HELD_BACK:
        if HELD_BACK_NOTE not in latest.warning_list:
            latest = store.update_subject(
                latest.id, now=clock.now(),
                warnings=json.dumps([*latest.warning_list, HELD_BACK_NOTE]),
            )
        return _note_seen(store, latest, seen)
    row = _record(job, store, clock, folder.name, report, version_fingerprint(report), settings)
    return _note_seen(store, row, seen)


def _seen_stamp(folder: SubjectFolder, scanned_at: float) -> float:
    """What intake has looked at once it validated ``folder``: the folder's newest change
    as the scan saw it, taken before the validation began, so a file added while the
    folder was being validated is newer and is looked at on the next pass.

    Never later than the scan's time less :data:`MTIME_SLACK_SECONDS`: a file whose time
    lies in the future (a clock set wrong, times copied along) would hide every change
    until then, and a coarse file time could make a file written just after the scan look
    older than it. A folder changed just before its scan is then looked at once more.
    """
    return min(folder.last_change, scanned_at - MTIME_SLACK_SECONDS)


def _note_seen(store: StateStore, row: SubjectRow, seen: float) -> SubjectRow:
    """Keep ``seen`` (see :func:`_seen_stamp`) with ``row``: the folder is not validated
    again until something in it is newer. Bookkeeping, not news about the subject: its
    updated_at (which the exit code and the report read) stays as it was."""
    if row.inbox_seen is not None and row.inbox_seen >= seen:
        return row
    return store.update_subject(row.id, now=row.updated_at, inbox_seen=seen)


def version_fingerprint(report: DatasetReport) -> str:
    """The dataset's fingerprint; a rejected folder's also covers why it was rejected, so
    fixing the problem makes a new version."""
    if report.ok:
        return report.fingerprint
    why = "\n".join([report.error or "", *(f"{r.name}: {r.reason}" for r in report.rejected_files)])
    return "rejected-" + hashlib.sha256(f"{report.fingerprint}\n{why}".encode()).hexdigest()[:32]


def _record(
    job: JobConfig, store: StateStore, clock: Clock, name: str, report: DatasetReport,
    fingerprint: str, settings: SubjectSettings,
) -> SubjectRow:
    images = [NewImage(i.name, i.path, i.sha256, i.format, i.caption, i.faces, i.sharpness,
                       i.changes) for i in report.accepted]
    error = report.error if report.error else (None if report.accepted else "no usable image")
    if report.ok and settings.init_images:
        # Kept before the version that names them: its img2img prompts send these bytes,
        # whatever becomes of the files.
        store.keep_init_images(settings.init_images, now=clock.now())
    row = store.add_version(
        job.job.name, name, fingerprint, settings.training.kind,
        state=VALIDATED if report.ok else REJECTED, now=clock.now(),
        images=images if report.ok else (),
        rejections=[(r.name, r.reason, r.thumbnail) for r in report.rejected_files]
        + ([] if report.ok else _unused(name, report)),
        warnings=report.warnings, error=error, frozen=settings.freeze(),
    )
    log.info("intake.version", subject=name, version=row.version, state=row.state,
             images=len(images), rejected=len(report.rejected_files), error=row.error)
    return row


def _unused(name: str, report: DatasetReport) -> list[tuple[str, str, bytes | None]]:
    """The good photos of a folder refused as a whole (too many, missing captions...), as
    refused files too: every photo of it is then counted, and each says why it was not used."""
    reason = f"not used: {name}/ was refused as a whole (see its error)"
    # One reason for all: status shows them as one line naming the files.
    return [(image.name, reason, None) for image in report.accepted]


def _record_error(
    job: JobConfig, store: StateStore, clock: Clock, folder: SubjectFolder,
    latest: SubjectRow | None, message: str, *, prefix: str,
) -> SubjectRow | None:
    """A rejected version whose error is ``message``, unless it is recorded already (or the
    subject was trained: its trained version stays)."""
    fingerprint = prefix + hashlib.sha256(message.encode()).hexdigest()[:32]
    if latest is not None and latest.fingerprint == fingerprint:
        return None
    if latest is not None and latest.state in COMMITTED_STATES:
        return None
    row = store.add_version(
        job.job.name, folder.name, fingerprint, job.training.kind, state=REJECTED,
        now=clock.now(), error=message,
    )
    event = "intake.refused" if prefix == REFUSED_PREFIX else "intake.config_error"
    log.warning(event, subject=folder.name, error=message)
    return row
