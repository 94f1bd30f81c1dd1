"""Terminal rendering with rich: the status table, validation verdicts, run summaries.

Names, reasons and file names here come from the inbox or the service: every line and cell
is a ``Text`` built by :func:`pipeline.views.textsafe.line`, never a markup string, so they show
as they are spelt whatever console they are printed on.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from ..inputs.dataset import DatasetReport
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
        if details:
            console.print(line((_label(s), "bold"), ":"), soft_wrap=True)
        for kind, text in details:
            console.print(line(f"  {kind}: {text}"), soft_wrap=True)


def print_validation(console: Console, reports: Sequence[DatasetReport]) -> None:
    for report in reports:
        verdict = ("accepted", "green") if report.ok else ("rejected", "red")
        console.print(line((report.subject, "bold"), ": ", verdict,
                           f", {len(report.accepted)} image(s)"))
        if report.error:
            console.print(line("  ", ("error:", "red"), f" {report.error}"))
        for warning in report.warnings:
            console.print(line("  ", ("warning:", "yellow"), f" {warning}"))
        for image in report.accepted:
            console.print(line(f"  ok      {image.name} ({image.format}, "
                               f"{image.width}x{image.height})"))
        for rejection in report.rejected_files:
            console.print(line("  ", ("refused", "red"), f" {rejection.name}: {rejection.reason}"))
