"""The run report: ``outbox/<job>/report.json`` and ``report.html``, read from the state store.

    subjects = summarize(store, job.job.name)
    data = build_report(job.job.name, subjects, job.job.outbox, store)
    json_path, html_path = write_report(data, job.job.outbox,
                                        thumbnails=refused_thumbnails(subjects))
    # or, the same in one call:
    json_path, html_path = write_job_report(job, store)

The JSON holds, per subject: its state, version, images, training (task, status, LoRA file),
timings with durations, refused files with their reasons, the accepted photos (faces,
sharpness, what the upload changed), warnings, error, each prompt with its slug, text
and pictures, and its spend from the ledger (units, and money with the job's ``[prices]``);
and the job's whole spend (every version of every subject). Paths are relative to
``outbox/<job>/``, where both files are written, so the folder can be moved or served as
it is.

The HTML page shows the same data and needs nothing else: inline CSS, no script, every
thumbnail embedded as a small JPEG data URI. A generated picture's thumbnail links to the
full picture by relative path and is made while the page is written, one at a time, so
memory stays flat however many pictures there are. A refused photo's thumbnail was made at
intake and kept in the store; it goes to the page only (``thumbnails=``), never to the JSON.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

from ..files import write_atomic, write_json_atomic
from ..store.protocol import StateStore, SubjectRow
from ..store.states import SUBJECT_STATES
from .report_html import RefusedThumbnails, render_html
from .spend import SpendLine, spend_by_subject, spend_line
from .summary import MILESTONES, SubjectSummary, summarize

if TYPE_CHECKING:
    from ..jobfile.loading import JobConfig
    from ..jobfile.spending import PricesSection

__all__ = [
    "build_report", "refused_thumbnails", "write_job_report", "write_report", "REPORT_HTML",
    "REPORT_JSON",
]

log = structlog.get_logger(__name__)

REPORT_JSON: Final = "report.json"
REPORT_HTML: Final = "report.html"
#: Durations between milestones: name -> (from, to).
DURATIONS: Final = {
    "preparing": ("discovered", "submitted"),   # checks and uploads, before the paid request
    "training": ("submitted", "trained"),       # queued and trained on the service
    "deploying": ("trained", "serving"),        # until the model can be used
    "generating": ("serving", "finished"),      # prompts run and pictures downloaded
    "total": ("discovered", "finished"),
}


# --- the data --------------------------------------------------------------------------------


def build_report(
    job_name: str,
    subjects: list[SubjectSummary],
    outbox_dir: Path,
    store: StateStore,
    *,
    now: float | None = None,
    prices: PricesSection | None = None,
) -> dict[str, Any]:
    """The report's data, JSON-able. ``outbox_dir`` is the job's outbox (``job.outbox``);
    paths in the result are relative to ``outbox_dir / job_name``; money is the ledger's
    units at ``prices`` (None: units only)."""
    report_dir = outbox_dir / job_name
    rows = {(row.name, row.version): row for row in store.subjects(job_name)}
    spend = spend_by_subject(store, job_name, prices)
    nothing = spend_line((), prices)
    entries = [
        _subject_entry(s, rows.get((s.name, s.version)), store, report_dir,
                       spend.get((s.name, s.version), nothing))
        for s in subjects
    ]
    counts = {state: 0 for state in SUBJECT_STATES}
    for s in subjects:
        counts[s.state] = counts.get(s.state, 0) + 1
    generated = time.time() if now is None else now
    return {
        "job": job_name,
        "generated_at": _iso(generated),
        "counts": {state: n for state, n in counts.items() if n},
        "totals": {
            "subjects": len(subjects),
            "pictures": sum(len(s.outputs) for s in subjects),
            "rejected_files": sum(len(s.rejected_files) for s in subjects),
        },
        "spend": {"currency": prices.currency if prices is not None else None,
                  **spend_line(store.ledger(job_name), prices).to_json()},
        "subjects": entries,
    }


def _subject_entry(
    s: SubjectSummary, row: SubjectRow | None, store: StateStore, report_dir: Path,
    spend: SpendLine,
) -> dict[str, Any]:
    return {
        "name": s.name,
        "version": s.version,
        "state": s.state,
        "images": s.images,
        "training": {
            "name": s.training_name,
            "task_id": s.task_id,
            "status": s.task_status,
            "progress": s.progress,
            "eta": s.eta,
            "model_name": s.model_name,
        },
        "lora_file": _lora_file(s.lora_path, report_dir),
        "timings": _timings(s.timings),
        "rejected_files": [dict(r) for r in s.rejected_files],
        "photos": [{**p, "changes": list(p.get("changes") or [])} for p in s.photos],
        "good_face_photos": s.good_face_photos,
        "warnings": list(s.warnings),
        "error": s.error,
        "prompts_done": s.prompts_done,
        "prompts_total": s.prompts_total,
        "prompts": _prompts(s, row, store, report_dir),
        "spend": spend.to_json(),
    }


def refused_thumbnails(subjects: list[SubjectSummary]) -> dict[tuple[str, int], dict[str, bytes]]:
    """The refused photos' thumbnails of ``subjects``, for :func:`write_report`:
    (subject, version) -> file name -> a small JPEG."""
    return {(s.name, s.version): dict(s.thumbnails) for s in subjects if s.thumbnails}


def _timings(timings: dict[str, float | None]) -> dict[str, Any]:
    at = {name: timings.get(name) for name in MILESTONES}
    durations: dict[str, float | None] = {}
    for name, (start, end) in DURATIONS.items():
        first, last = at[start], at[end]
        durations[name] = round(last - first, 3) if first is not None and last is not None \
            and last >= first else None
    return {
        "at": {name: value for name, value in at.items()},
        "at_iso": {name: _iso(value) if value is not None else None for name, value in at.items()},
        "durations": durations,
    }


def _prompts(
    s: SubjectSummary, row: SubjectRow | None, store: StateStore, report_dir: Path
) -> list[dict[str, Any]]:
    if row is None:  # not in the store as given: list the pictures without their prompts
        pictures = [_relative(p, report_dir) for p in s.outputs]
        return [_prompt_entry(0, "", "", None, None, pictures)] if pictures else []
    by_generation: dict[int, list[str]] = {}
    for output in store.outputs(row.id):
        by_generation.setdefault(output.generation_id, []).append(
            _relative(output.path, report_dir)
        )
    return [
        _prompt_entry(g.prompt_index, g.slug, g.prompt, g.state, g.error,
                      by_generation.get(g.id, []))
        for g in store.generations(row.id)
    ]


def _prompt_entry(
    index: int, slug: str, prompt: str, state: str | None, error: str | None,
    pictures: list[str],
) -> dict[str, Any]:
    return {"index": index, "slug": slug, "prompt": prompt, "state": state, "error": error,
            "pictures": pictures}


def _lora_file(path: str | None, report_dir: Path) -> dict[str, Any] | None:
    if not path:
        return None
    try:
        size: int | None = Path(path).stat().st_size
    except OSError:
        size = None
    return {"path": _relative(path, report_dir), "bytes": size}


def _relative(path: str, report_dir: Path) -> str:
    """``path`` relative to the report's folder, with forward slashes."""
    return Path(os.path.relpath(Path(path).absolute(), report_dir.absolute())).as_posix()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


# --- writing ---------------------------------------------------------------------------------


def write_report(
    data: dict[str, Any], outbox_dir: Path, *, thumbnails: RefusedThumbnails | None = None
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``outbox_dir / data["job"]``, each
    atomically (temp file, then rename); return their paths (json, html).

    ``thumbnails`` (from :func:`refused_thumbnails`) are shown with the refused photos in
    the page only; without them each refused file gets a placeholder."""
    report_dir = outbox_dir / str(data["job"])
    report_dir.mkdir(parents=True, exist_ok=True)
    json_path = report_dir / REPORT_JSON
    html_path = report_dir / REPORT_HTML
    write_json_atomic(json_path, data)
    chunks = render_html(data, report_dir, thumbnails)
    write_atomic(html_path, (chunk.encode("utf-8") for chunk in chunks))
    log.info("report.written", json=str(json_path), html=str(html_path))
    return json_path, html_path


def write_job_report(
    job: JobConfig, store: StateStore, *, now: float | None = None
) -> tuple[Path, Path]:
    """Summarize ``job`` from ``store`` and write both report files; return (json, html)."""
    name = job.job.name
    subjects = summarize(store, name)
    data = build_report(name, subjects, job.job.outbox, store, now=now, prices=job.prices)
    return write_report(data, job.job.outbox, thumbnails=refused_thumbnails(subjects))

