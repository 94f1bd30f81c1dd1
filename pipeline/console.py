"""Terminal rendering with rich: the status table, validation verdicts, run summaries."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from .dataset import DatasetReport
from .summary import SubjectSummary

STATE_STYLES = {
    "done": "green", "trained": "green", "generating": "cyan", "training": "cyan",
    "submitting": "cyan", "uploading": "cyan", "uploaded": "cyan", "validated": "cyan",
    "rejected": "yellow", "failed": "red", "canceled": "red",
}


def status_table(job: str, subjects: Sequence[SubjectSummary]) -> Table:
    table = Table(title=f"job {job}", title_justify="left")
    for column in ("subject", "state", "images", "training task", "progress", "outputs", "notes"):
        table.add_column(column, overflow="fold")
    for s in subjects:
        progress = "" if s.progress is None else f"{s.progress}%"
        if s.eta:
            progress += f" (eta {s.eta}s)"
        outputs = f"{s.prompts_done}/{s.prompts_total} prompts, {len(s.outputs)} files"
        notes = s.error or ("; ".join(s.warnings) if s.warnings else "")
        if s.rejected_files:
            notes = f"{len(s.rejected_files)} file(s) rejected. " + notes
        name = s.name if s.version == 1 else f"{s.name} (v{s.version})"
        style = STATE_STYLES.get(s.state, "")
        table.add_row(name, f"[{style}]{s.state}[/]" if style else s.state, str(s.images),
                      s.task_id or "", progress, outputs if s.prompts_total else "", notes)
    return table


def print_status(console: Console, job: str, subjects: Sequence[SubjectSummary]) -> None:
    if not subjects:
        console.print(f"job {job}: no subjects yet")
        return
    console.print(status_table(job, subjects))


def print_validation(console: Console, reports: Sequence[DatasetReport]) -> None:
    for report in reports:
        verdict = "[green]accepted[/]" if report.ok else "[red]rejected[/]"
        console.print(f"[bold]{report.subject}[/]: {verdict}, {len(report.accepted)} image(s)")
        if report.error:
            console.print(f"  [red]error:[/] {report.error}")
        for warning in report.warnings:
            console.print(f"  [yellow]warning:[/] {warning}")
        for image in report.accepted:
            console.print(f"  ok      {image.name} ({image.format}, {image.width}x{image.height})")
        for rejection in report.rejected_files:
            console.print(f"  [red]refused[/] {rejection.name}: {rejection.reason}")
