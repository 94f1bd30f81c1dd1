"""Terminal rendering with rich: the status table, validation verdicts, run summaries.

Names, reasons and file names here come from the inbox or the service: every line and cell
is a ``Text`` built by :func:`pipeline.views.textsafe.line`, never a markup string, so they show
as they are spelt whatever console they are printed on.
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..inputs.dataset import DatasetReport, PhotoVerdict
from ..store.states import ACTIVE_STATES, REJECTED, SETTLED_STATES
from .summary import SubjectSummary
from .textsafe import line

STATE_STYLES = {
    "done": "green", "trained": "green", "generating": "cyan", "training": "cyan",
    "submitting": "cyan", "uploading": "cyan", "uploaded": "cyan", "validated": "cyan",
    "rejected": "yellow", "failed": "red", "canceled": "red",
}


#: States in the order a subject goes through them, for the totals line.
_STATE_ORDER = (*ACTIVE_STATES, *sorted(SETTLED_STATES))
#: File names listed in one line of refused files sharing a reason; the rest are counted.
MAX_NAMES = 5


def _progress(s: SubjectSummary) -> str:
    """Training progress and ETA; nothing once the subject has settled (a failed training's
    last 74% is no progress)."""
    progress, eta = s.live_progress
    text = "" if progress is None else f"{progress}%"
    return text + (f" (eta {eta}s)" if eta else "")


def _images(s: SubjectSummary) -> str:
    """Photos taken for training; for a subject refused as a whole, how many it had."""
    if s.state == REJECTED:
        return f"{s.photos_found} photos, refused"
    return str(s.images)


def _outputs(s: SubjectSummary) -> str:
    return f"{s.prompts_done}/{s.prompts_total} prompts, {len(s.outputs)} files"


def _label(s: SubjectSummary) -> str:
    return s.name if s.version == 1 else f"{s.name} (v{s.version})"


def status_table(job: str, subjects: Sequence[SubjectSummary]) -> Table:
    table = Table(title=line((f"job {job}", "table.title")), title_justify="left")
    for column in ("subject", "state", "images", "training task", "progress", "outputs"):
        table.add_column(column, overflow="fold")
    for s in subjects:
        table.add_row(line(_label(s)), line((s.state, STATE_STYLES.get(s.state, ""))),
                      line(_images(s)), line(s.task_id or ""), line(_progress(s)),
                      line(_outputs(s) if s.prompts_total else ""))
    return table


def converted_photos(s: SubjectSummary) -> list[str]:
    """One line per set of changes the upload made: ``"metadata removed: a.jpg, b.jpg"``."""
    by_changes: dict[tuple[str, ...], list[str]] = {}
    for photo in s.photos:
        if photo["changes"]:
            by_changes.setdefault(tuple(photo["changes"]), []).append(photo["file"])
    return [f"{'; '.join(changes)}: {', '.join(files)}" for changes, files in by_changes.items()]


def refusals(s: SubjectSummary) -> list[str]:
    """One line per reason a file was refused. A reason names its file, except the one
    shared by the photos of a folder refused as a whole, which is given once, after the
    names: ``"a.jpg, b.jpg and 49 more: not used: x/ was refused as a whole ..."``."""
    by_reason: dict[str, list[str]] = {}
    for refused in s.rejected_files:
        by_reason.setdefault(refused["reason"], []).append(refused["file"])
    lines = []
    for reason, files in by_reason.items():
        if len(files) == 1 and files[0] in reason:
            lines.append(reason)
            continue
        shown = ", ".join(files[:MAX_NAMES])
        more = f" and {len(files) - MAX_NAMES} more" if len(files) > MAX_NAMES else ""
        lines.append(f"{shown}{more}: {reason}")
    return lines


def retry_command(job_file: Path, name: str, config: Path | None = None) -> str:
    """The command that retries ``name``, ready to paste into a shell."""
    settings = f" --config {shlex.quote(str(config))}" if config is not None else ""
    return f"lora-pipeline{settings} retry {shlex.quote(str(job_file))} {shlex.quote(name)}"


#: What a failed subject's retry command names: the job file and the ``--config`` file (None
#: for the default one); None for no retry command.
Retry = tuple[Path, Path | None] | None


def _error(s: SubjectSummary, retry: Retry) -> str:
    """The subject's error, ending with the command to retry it when ``retry`` is given and
    retrying has work to do."""
    assert s.error is not None
    if retry is None or not s.retryable:
        return s.error
    return f"{s.error}; to try again: {retry_command(retry[0], s.name, retry[1])}"


def problems(
    s: SubjectSummary, *, retry: Retry = None, since: float | None = None,
    warnings_before: Mapping[tuple[str, int], frozenset[str]] | None = None,
) -> list[tuple[str, str]]:
    """The subject's error, warnings, refused files and photos sent converted, as
    (kind, text). With ``since`` (a pass's start), only what that pass recorded: of a
    subject that changed in it, the error and the warnings not in ``warnings_before``; the
    refused and converted files of a version taken in during it."""
    changed = since is None or s.updated_at >= since
    taken_in_now = since is None or (s.timings.get("discovered") or 0.0) >= since
    before = (warnings_before or {}).get((s.name, s.version), frozenset())
    found = []
    if s.error and changed:
        found.append(("error", _error(s, retry)))
    found += [("warning", w) for w in s.warnings if changed and w not in before]
    if taken_in_now:
        found += [("refused", text) for text in refusals(s)]
        found += [("sent converted", text) for text in converted_photos(s)]
    return found


def _print_rows(console: Console, job: str, subjects: Sequence[SubjectSummary]) -> None:
    if console.is_terminal:
        console.print(status_table(job, subjects))
        return
    for s in subjects:
        fields = ([f"photos={s.photos_found} refused"] if s.state == REJECTED
                  else [f"images={s.images}"])
        fields.append(f"task={s.task_id or '-'}")
        if s.live_progress[0] is not None:
            fields.append(f"progress={_progress(s)}")
        if s.prompts_total:
            fields.append(f"outputs={_outputs(s)}")
        console.print(line(f"{job}/{_label(s)}: {s.state} " + " ".join(fields)),
                      soft_wrap=True)


def _print_problems(
    console: Console, subjects: Sequence[SubjectSummary],
    found: Mapping[tuple[str, int], list[tuple[str, str]]],
) -> None:
    for s in subjects:
        details = found.get((s.name, s.version), [])
        if details:
            console.print(line((_label(s), "bold"), ":"), soft_wrap=True)
        for kind, text in details:
            console.print(line(f"  {kind}: {text}"), soft_wrap=True)


def print_status(
    console: Console, job: str, subjects: Sequence[SubjectSummary], *, retry: Retry = None
) -> None:
    """A table on a terminal, one line per subject otherwise; then every reason in full,
    a failed subject's with the command that retries it (``retry``: see :func:`problems`)."""
    if not subjects:
        console.print(line(f"job {job}: no subjects yet"))
        return
    _print_rows(console, job, subjects)
    _print_problems(console, subjects,
                    {(s.name, s.version): problems(s, retry=retry) for s in subjects})


def totals(subjects: Sequence[SubjectSummary], changed: int) -> str:
    """``12 subjects: 10 done, 2 training; nothing changed this pass``."""
    by_state = Counter(s.state for s in subjects)
    order = [state for state in _STATE_ORDER if state in by_state]
    order += sorted(set(by_state) - set(order))
    counts = ", ".join(f"{by_state[state]} {state}" for state in order)
    what = "nothing changed" if not changed else f"{changed} changed"
    noun = "subject" if len(subjects) == 1 else "subjects"
    return f"{len(subjects)} {noun}: {counts}; {what} this pass"


def print_pass(
    console: Console, job: str, subjects: Sequence[SubjectSummary], *, since: float,
    warnings_before: Mapping[tuple[str, int], frozenset[str]], retry: Retry = None,
) -> None:
    """The end of a pass: the subjects it changed (their row updated since ``since``), what
    it recorded about them (see :func:`problems`), and one line of totals. A settled inbox
    gives that one line; ``status`` shows everything."""
    changed = [s for s in subjects if s.updated_at >= since]
    if changed:
        _print_rows(console, job, changed)
    found = {(s.name, s.version): problems(s, retry=retry, since=since,
                                           warnings_before=warnings_before)
             for s in subjects}
    _print_problems(console, subjects, found)
    console.print(line(f"job {job}: " + (totals(subjects, len(changed)) if subjects
                                         else "no subjects yet")), soft_wrap=True)


_VERDICT_STYLES = {"ok": "green", "warning": "yellow", "refused": "red"}


def _measured(photo: PhotoVerdict) -> str:
    parts = []
    if photo.faces is not None:
        parts.append(f"{photo.faces} face" + ("" if photo.faces == 1 else "s"))
    if photo.sharpness is not None:
        parts.append(f"sharpness {photo.sharpness:.0f}")
    return ", ".join(parts)


def _subject_counts(report: DatasetReport) -> str:
    notes = sum(1 for photo in report.photos if photo.verdict == "warning")
    parts = [f"{len(report.accepted)} photos accepted", f"{len(report.rejected_files)} refused",
             f"{notes} with warnings"]
    if report.good_face_photos is not None:
        parts.append(f"good face photos {report.good_face_photos} of "
                     f"{report.face_photos_needed}")
    return ", ".join(parts)


def print_validation(console: Console, reports: Sequence[DatasetReport]) -> None:
    """Per subject: its verdict and counts, then each photo (verdict, faces, sharpness, what
    the upload changes, every reason), the files ignored, the subject's own warnings and
    error; then a total over all subjects."""
    for report in reports:
        verdict = ("accepted", "green") if report.ok else ("rejected", "red")
        console.print(line((report.subject, "bold"), ": ", verdict,
                           f": {_subject_counts(report)}"), soft_wrap=True)
        for photo in report.photos:
            measured = _measured(photo)
            console.print(line("  ", (f"{photo.verdict:<8}", _VERDICT_STYLES[photo.verdict]),
                               f" {photo.name}", f"  ({measured})" if measured else ""),
                          soft_wrap=True)
            if photo.changes:
                console.print(line(f"           sent converted: {'; '.join(photo.changes)}"),
                              soft_wrap=True)
            for reason in photo.reasons:
                console.print(line(f"           {reason}"), soft_wrap=True)
        for name in report.ignored:
            console.print(line("  ", ("ignored ", "dim"), f" {name}"), soft_wrap=True)
        photo_notes = {reason for photo in report.photos for reason in photo.reasons}
        for warning in report.warnings:
            if warning not in photo_notes:
                console.print(line("  ", ("warning:", "yellow"), f" {warning}"), soft_wrap=True)
        if report.error:
            console.print(line("  ", ("error:", "red"), f" {report.error}"), soft_wrap=True)
    if len(reports) > 1:
        console.print(line(("total", "bold"), f": {_total(reports)}"), soft_wrap=True)


def _total(reports: Sequence[DatasetReport]) -> str:
    accepted = sum(1 for report in reports if report.ok)
    used = sum(len(report.accepted) for report in reports)
    refused = sum(len(report.rejected_files) for report in reports)
    notes = sum(1 for report in reports for photo in report.photos
                if photo.verdict == "warning")
    return (f"{len(reports)} subjects, {accepted} accepted, {len(reports) - accepted} "
            f"rejected; {used} photos accepted, {refused} refused, {notes} with warnings")
