"""Intake: find ready subject folders, validate them, record each new version.

A folder is validated again only when something in it changed since its version was
recorded. A subject whose photos change after its training was paid for becomes a new
version only when the job sets ``retrain_on_change``; otherwise it keeps its trained
version, with a warning that says so.

A folder the inbox refuses to read (a link out of the inbox, far too many entries) and a
``subject.toml`` that cannot be used are each recorded once as a rejected version whose
error says why; fixing the problem makes a new version.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog

from ...clock import Clock
from ...errors import ConfigError
from ...inputs.dataset import DatasetReport, validate_subject
from ...inputs.inbox import SubjectFolder, scan_inbox
from ...jobfile.loading import JobConfig, SubjectSettings
from ...store.protocol import NewImage, StateStore, SubjectRow
from ...store.states import COMMITTED_STATES, REJECTED, VALIDATED

log = structlog.get_logger(__name__)

#: Folders validated at once during an intake (bounded by the machine's cores).
MAX_CHECK_THREADS = 4
#: Fingerprint prefixes of versions recorded without validating the folder.
CONFIG_ERROR_PREFIX = "config-"
REFUSED_PREFIX = "refused-"


@dataclass
class IntakeResult:
    """What one pass over the inbox did."""

    new_versions: list[SubjectRow] = field(default_factory=list)
    waiting: list[SubjectFolder] = field(default_factory=list)
    held_back: list[str] = field(default_factory=list)


def intake(job: JobConfig, store: StateStore, clock: Clock) -> IntakeResult:
    """Scan the job's inbox once and record every subject version that is new."""
    section = job.job
    result = IntakeResult()
    folders = scan_inbox(
        section.inbox, settle_seconds=section.settle_seconds,
        require_marker=section.require_ready_marker, now=clock.now(),
    )
    todo: list[tuple[SubjectFolder, SubjectRow | None]] = []
    for folder in folders:
        if folder.refused is not None:
            latest = store.latest(section.name, folder.name)
            row = _record_error(job, store, clock, folder, latest, folder.refused,
                                prefix=REFUSED_PREFIX)
            if row is not None:
                result.new_versions.append(row)
            continue
        if not folder.ready:
            result.waiting.append(folder)
            continue
        latest = store.latest(section.name, folder.name)
        if latest is not None and folder.last_change <= latest.created_at and not (
            latest.fingerprint.startswith(REFUSED_PREFIX)  # fixed by a move: old mtimes
        ):
            continue
        todo.append((folder, latest))
    for (folder, latest), checked in zip(todo, _check_all(job, [f for f, _ in todo]),
                                         strict=True):
        row = _take_in(job, store, clock, folder, latest, checked)
        if row is None:
            continue
        if latest is not None and row.id == latest.id:
            result.held_back.append(folder.name)
        else:
            result.new_versions.append(row)
    return result


_Checked = tuple[SubjectSettings, DatasetReport] | ConfigError


def _check(job: JobConfig, folder: SubjectFolder) -> _Checked:
    """A folder's settings and validation report: local reads and decoding, no state."""
    try:
        settings = job.subject_settings(folder.path)
    except ConfigError as exc:
        return exc
    training = settings.training
    report = validate_subject(
        folder.path, kind=training.kind, captions=settings.captions,
        training_size=(training.width, training.height), max_images=job.job.max_images,
        root=job.job.inbox,
    )
    return settings, report


def _check_all(job: JobConfig, folders: list[SubjectFolder]) -> Iterator[_Checked]:
    """:func:`_check` of every folder, in order, on a few threads: decoding the photos is
    most of an intake's time, and Pillow and hashlib release the GIL while they work."""
    workers = min(len(folders), os.cpu_count() or 1, MAX_CHECK_THREADS)
    if workers <= 1:
        yield from (_check(job, folder) for folder in folders)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="intake")
    try:
        yield from pool.map(lambda folder: _check(job, folder), folders)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _take_in(
    job: JobConfig, store: StateStore, clock: Clock, folder: SubjectFolder,
    latest: SubjectRow | None, checked: _Checked,
) -> SubjectRow | None:
    section = job.job
    if isinstance(checked, ConfigError):
        return _record_error(job, store, clock, folder, latest, str(checked),
                             prefix=CONFIG_ERROR_PREFIX)
    settings, report = checked
    training = settings.training
    if not report.settled:
        log.info("intake.changing", subject=folder.name)
        return None
    fingerprint = version_fingerprint(report)
    if latest is not None and latest.fingerprint == fingerprint:
        return None
    if latest is not None and latest.state in COMMITTED_STATES and not section.retrain_on_change:
        note = ("photos changed after this subject was trained; set retrain_on_change = true "
                "in the job to train the new version")
        if note not in latest.warning_list:
            store.update_subject(
                latest.id, now=clock.now(), warnings=json.dumps([*latest.warning_list, note])
            )
        return store.subject(latest.id)
    return _record(job, store, clock, folder.name, report, fingerprint, training.kind)


def version_fingerprint(report: DatasetReport) -> str:
    """The dataset's fingerprint; a rejected folder's also covers why it was rejected, so
    fixing the problem makes a new version."""
    if report.ok:
        return report.fingerprint
    why = "\n".join([report.error or "", *(f"{r.name}: {r.reason}" for r in report.rejected_files)])
    return "rejected-" + hashlib.sha256(f"{report.fingerprint}\n{why}".encode()).hexdigest()[:32]


def _record(
    job: JobConfig, store: StateStore, clock: Clock, name: str, report: DatasetReport,
    fingerprint: str, kind: str,
) -> SubjectRow:
    images = [NewImage(i.name, i.path, i.sha256, i.format, i.caption) for i in report.accepted]
    error = report.error if report.error else (None if report.accepted else "no usable image")
    row = store.add_version(
        job.job.name, name, fingerprint, kind, state=VALIDATED if report.ok else REJECTED,
        now=clock.now(), images=images if report.ok else (),
        rejections=[(r.name, r.reason) for r in report.rejected_files],
        warnings=report.warnings, error=error,
    )
    log.info("intake.version", subject=name, version=row.version, state=row.state,
             images=len(images), rejected=len(report.rejected_files), error=row.error)
    return row


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
