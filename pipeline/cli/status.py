"""``status --json``: where every subject of a job stands, as one JSON document.

The fields are a promise to scripts (documented in README, "Commands"); ``schema`` changes
when one is removed or changes meaning, never when one is added::

    {"schema": 1, "job": "portraits", "subjects": [
      {"name": "alice", "version": 1, "state": "training", "images": 12, "photos": 13,
       "refused_files": [{"file": "x.gif", "reason": "..."}], "warnings": [],
       "task": {"id": "...", "status": "TRAINING"}, "progress": 74, "eta": 120,
       "outputs": {"prompts_done": 3, "prompts_total": 3, "files": 6},
       "error": null}]}

``spend`` is added to a subject when the summary carries one. With the state in PostgreSQL
(``LORA_STATE_URL``) the document also has ``workers``: the job's workers alive now, each
``{"host", "pid", "started_at", "seen_at"}`` (seconds since the epoch). Once a subject has settled
(done, failed, canceled, rejected), ``eta`` is null (nothing is left to wait for) and
``progress`` is where its training ended (100 when it finished, 74 for one that failed
there): history, not progress going on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from ..config import Settings
from ..store.coordination import WorkerRow, workers_alive
from ..store.postgres import PostgresStore
from ..store.queries import SqlStore
from ..views.summary import SubjectSummary

SCHEMA = 1


def subject_data(subject: SubjectSummary) -> dict[str, Any]:
    """One subject's documented fields, from its summary."""
    full = subject.to_json()
    data: dict[str, Any] = {
        "name": subject.name,
        "version": subject.version,
        "state": subject.state,
        "images": subject.images,
        "photos": subject.photos_found,
        "refused_files": [{"file": r["file"], "reason": r["reason"]}
                          for r in subject.rejected_files],
        "warnings": list(subject.warnings),
        "task": {"id": subject.task_id, "status": subject.task_status},
        "progress": subject.progress,
        "eta": subject.live_progress[1],
        "outputs": {"prompts_done": subject.prompts_done,
                    "prompts_total": subject.prompts_total,
                    "files": len(subject.outputs)},
        "error": subject.error,
    }
    if "spend" in full:
        data["spend"] = full["spend"]
    return data


def status_data(
    job: str, subjects: Sequence[SubjectSummary], workers: Sequence[WorkerRow] | None = None
) -> dict[str, Any]:
    """The whole document: the job's name and every subject, in the store's order; the
    live workers when the state is shared (see the module)."""
    data: dict[str, Any] = {"schema": SCHEMA, "job": job,
                            "subjects": [subject_data(s) for s in subjects]}
    if workers is not None:
        data["workers"] = [asdict(w) for w in workers]
    return data


def live_workers(store: SqlStore | None, job: str, settings: Settings) -> list[WorkerRow] | None:
    """The job's workers alive now when its state is in PostgreSQL; None with SQLite."""
    if not isinstance(store, PostgresStore):
        return None
    return workers_alive(store, job, now=time.time(), ttl=settings.lease_seconds)


def workers_line(workers: Sequence[WorkerRow], now: float) -> str:
    """``workers: alpha (pid 4021, up 2 h), beta (pid 77, up 5 min)``."""
    if not workers:
        return "workers: none running (start `lora-pipeline watch JOB` on a host)"
    return "workers: " + ", ".join(
        f"{w.host} (pid {w.pid}, up {_duration(now - w.started_at)})" for w in workers)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"
