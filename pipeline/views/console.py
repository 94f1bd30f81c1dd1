"""Terminal rendering with rich: the status table, validation verdicts, run summaries.

Names, reasons and file names here come from the inbox or the service: every line and cell
is a ``Text`` built by :func:`pipeline.views.textsafe.line`, never a markup string, so they show
as they are spelt whatever console they are printed on.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from ..inputs.dataset import DatasetReport, PhotoVerdict
from .summary import SubjectSummary
from .textsafe import line

STATE_STYLES = {
    "done": "green", "trained": "green", "generating": "cyan", "training": "cyan",
    "submitting": "cyan", "uploading": "cyan", "uploaded": "cyan", "validated": "cyan",
    "rejected": "yellow", "failed": "red", "canceled": "red",
}


def _progress(s: SubjectSummary) -> str:
    text = "" if s.progress is None else f"{s.progress}%"
    return text + (f" (eta {s.eta}s)" if s.eta else "")


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
                      line(str(s.images)), line(s.task_id or ""), line(_progress(s)),
                      line(_outputs(s) if s.prompts_total else ""))
    return table


def converted_photos(s: SubjectSummary) -> list[str]:
    """One line per set of changes the upload made: ``"metadata removed: a.jpg, b.jpg"``."""
    by_changes: dict[tuple[str, ...], list[str]] = {}
    for photo in s.photos:
        if photo["changes"]:
            by_changes.setdefault(tuple(photo["changes"]), []).append(photo["file"])
    return [f"{'; '.join(changes)}: {', '.join(files)}" for changes, files in by_changes.items()]


def print_status(console: Console, job: str, subjects: Sequence[SubjectSummary]) -> None:
    """A table on a terminal, one line per subject otherwise; then every reason in full."""
    if not subjects:
        console.print(line(f"job {job}: no subjects yet"))
        return
    if console.is_terminal:
        console.print(status_table(job, subjects))
    else:
        for s in subjects:
            fields = [f"images={s.images}", f"task={s.task_id or '-'}"]
            if s.progress is not None:
                fields.append(f"progress={_progress(s)}")
            if s.prompts_total:
                fields.append(f"outputs={_outputs(s)}")
            console.print(line(f"{job}/{_label(s)}: {s.state} " + " ".join(fields)),
                          soft_wrap=True)
    for s in subjects:
        details = [("error", s.error)] if s.error else []
        details += [("warning", w) for w in s.warnings]
        details += [("refused", r["reason"]) for r in s.rejected_files]
        details += [("sent converted", text) for text in converted_photos(s)]
        if details:
            console.print(line((_label(s), "bold"), ":"), soft_wrap=True)
        for kind, text in details:
            console.print(line(f"  {kind}: {text}"), soft_wrap=True)


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
