"""Intake: find ready subject folders, validate them, record each new version.

A folder is validated again only when something in it changed since its version was
recorded. A subject whose photos change after its training was paid for becomes a new
version only when the job sets ``retrain_on_change``; otherwise it keeps its trained
version, with a warning that says so.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog

from ..clock import Clock
from ..dataset import DatasetReport, validate_subject
from ..errors import ConfigError
from ..inbox import SubjectFolder, scan_inbox
from ..jobs import JobConfig, SubjectSettings
from ..state import COMMITTED_STATES, REJECTED, VALIDATED, NewImage, StateStore, SubjectRow

log = structlog.get_logger(__name__)

#: Folders validated at once during an intake (bounded by the machine's cores).
MAX_CHECK_THREADS = 4


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
        if not folder.ready:
            result.waiting.append(folder)
            continue
        latest = store.latest(section.name, folder.name)
        if latest is not None and folder.last_change <= latest.created_at:
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
        return _record_config_error(job, store, clock, folder, latest, str(checked))
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


def _record_config_error(
    job: JobConfig, store: StateStore, clock: Clock, folder: SubjectFolder,
    latest: SubjectRow | None, message: str,
) -> SubjectRow | None:
    fingerprint = "config-" + hashlib.sha256(message.encode()).hexdigest()[:32]
    if latest is not None and latest.fingerprint == fingerprint:
        return None
    if latest is not None and latest.state in COMMITTED_STATES:
        return None
    row = store.add_version(
        job.job.name, folder.name, fingerprint, job.training.kind, state=REJECTED,
        now=clock.now(), error=message,
    )
    log.warning("intake.config_error", subject=folder.name, error=message)
    return row
