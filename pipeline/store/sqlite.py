"""The state store: the single source of truth of what was done, in SQLite (WAL).

Stages never talk SQL: they call the methods of :class:`StateStore`, a small protocol that a
second backend (PostgreSQL with ``FOR UPDATE SKIP LOCKED`` leasing, say) can implement
without touching them. :class:`SqliteStore` is the embedded default.

Every write goes through :meth:`SqliteStore.atomic`, one ``BEGIN IMMEDIATE`` transaction.
The schema version lives in ``PRAGMA user_version`` and :data:`MIGRATIONS` brings any older
file up to date when it is opened.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..errors import StateConflict
from ..redact import Scrubber

#: Subject states, in the order a subject goes through them.
DISCOVERED, REJECTED, VALIDATED, UPLOADING, UPLOADED = (
    "discovered", "rejected", "validated", "uploading", "uploaded"
)
SUBMITTING, TRAINING, TRAINED, GENERATING, DONE = (
    "submitting", "training", "trained", "generating", "done"
)
FAILED, CANCELED = "failed", "canceled"
SUBJECT_STATES = (
    DISCOVERED, REJECTED, VALIDATED, UPLOADING, UPLOADED, SUBMITTING, TRAINING, TRAINED,
    GENERATING, DONE, FAILED, CANCELED,
)
#: A subject in one of these states has cost (or may have cost) a training.
COMMITTED_STATES = frozenset({SUBMITTING, TRAINING, TRAINED, GENERATING, DONE})
#: Nothing more happens to a subject in these states until a user acts.
SETTLED_STATES = frozenset({REJECTED, DONE, FAILED, CANCELED})

#: Generation states: intent (submitting) is written before the POST.
GEN_PENDING, GEN_SUBMITTING, GEN_SUBMITTED, GEN_DONE, GEN_FAILED = (
    "pending", "submitting", "submitted", "done", "failed"
)

SubjectId = int


@dataclass(frozen=True)
class SubjectRow:
    """One version of one subject folder."""

    id: SubjectId
    job: str
    name: str
    version: int
    fingerprint: str
    kind: str
    state: str
    image_count: int
    training_name: str | None
    task_id: str | None
    task_status: str | None
    progress: int | None
    eta: int | None
    model_name: str | None
    lora_path: str | None
    error: str | None
    warnings: str | None
    attempts: int
    created_at: float
    updated_at: float
    submitted_at: float | None
    trained_at: float | None
    serving_at: float | None
    finished_at: float | None
    superseded: int

    @property
    def warning_list(self) -> list[str]:
        return list(json.loads(self.warnings)) if self.warnings else []


@dataclass(frozen=True)
class ImageRow:
    """An accepted image. ``file`` is its path as raw bytes: any name the OS allows
    (odd bytes included) survives the round trip; ``name`` is for people."""

    subject_id: SubjectId
    name: str
    file: bytes
    sha256: str
    format: str
    caption: str | None
    assets_id: str | None

    @property
    def path(self) -> Path:
        return Path(os.fsdecode(self.file))


@dataclass(frozen=True)
class RejectionRow:
    subject_id: SubjectId
    name: str
    reason: str


@dataclass(frozen=True)
class GenerationRow:
    """One prompt of one subject: one txt2img task (re-submitted only after a loss)."""

    id: int
    subject_id: SubjectId
    prompt_index: int
    slug: str
    prompt: str
    state: str
    task_id: str | None
    seed: int | None
    image_count: int
    submissions: int
    error: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class OutputRow:
    generation_id: int
    image_index: int
    path: str


@dataclass(frozen=True)
class NewImage:
    """An accepted image, as validation hands it to the store."""

    name: str
    path: Path
    sha256: str
    format: str
    caption: str | None


class StateStore(Protocol):
    """What the stages need from a state backend."""

    def add_version(
        self, job: str, name: str, fingerprint: str, kind: str, *, state: str, now: float,
        images: Sequence[NewImage] = (), rejections: Sequence[tuple[str, str]] = (),
        warnings: Sequence[str] = (), error: str | None = None,
    ) -> SubjectRow: ...
    def latest(self, job: str, name: str) -> SubjectRow | None: ...
    def subject(self, subject_id: SubjectId) -> SubjectRow: ...
    def subjects(self, job: str, *, states: Iterable[str] | None = None) -> list[SubjectRow]: ...
    def update_subject(self, subject_id: SubjectId, *, now: float, **values: Any) -> SubjectRow: ...
    def images(self, subject_id: SubjectId) -> list[ImageRow]: ...
    def rejections(self, subject_id: SubjectId) -> list[RejectionRow]: ...
    def set_image_asset(self, subject_id: SubjectId, sha256: str, assets_id: str) -> None: ...
    def cached_asset(self, sha256: str) -> str | None: ...
    def remember_asset(self, sha256: str, assets_id: str, *, now: float) -> None: ...
    def ensure_generations(
        self, subject_id: SubjectId, prompts: Sequence[tuple[int, str, str]], *, now: float
    ) -> list[GenerationRow]: ...
    def generations(self, subject_id: SubjectId) -> list[GenerationRow]: ...
    def update_generation(self, generation_id: int, *, now: float, **values: Any) -> None: ...
    def record_output(self, generation_id: int, image_index: int, path: str) -> None: ...
    def outputs(self, subject_id: SubjectId) -> list[OutputRow]: ...
    def close(self) -> None: ...


_SCHEMA_V1 = """
CREATE TABLE subjects (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    image_count INTEGER NOT NULL DEFAULT 0,
    training_name TEXT,
    task_id TEXT,
    task_status TEXT,
    progress INTEGER,
    eta INTEGER,
    model_name TEXT,
    lora_path TEXT,
    error TEXT,
    warnings TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    submitted_at REAL,
    trained_at REAL,
    serving_at REAL,
    finished_at REAL,
    superseded INTEGER NOT NULL DEFAULT 0,
    UNIQUE (job, name, version)
);
CREATE INDEX subjects_by_state ON subjects (job, state);
CREATE TABLE images (
    subject_id INTEGER NOT NULL REFERENCES subjects (id),
    name TEXT NOT NULL,
    file BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    format TEXT NOT NULL,
    caption TEXT,
    assets_id TEXT,
    PRIMARY KEY (subject_id, sha256)
);
CREATE TABLE rejections (
    subject_id INTEGER NOT NULL REFERENCES subjects (id),
    name TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE assets (
    sha256 TEXT PRIMARY KEY,
    assets_id TEXT NOT NULL,
    uploaded_at REAL NOT NULL
);
CREATE TABLE generations (
    id INTEGER PRIMARY KEY,
    subject_id INTEGER NOT NULL REFERENCES subjects (id),
    prompt_index INTEGER NOT NULL,
    slug TEXT NOT NULL,
    prompt TEXT NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT,
    seed INTEGER,
    image_count INTEGER NOT NULL DEFAULT 0,
    submissions INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (subject_id, prompt_index)
);
CREATE TABLE outputs (
    generation_id INTEGER NOT NULL REFERENCES generations (id),
    image_index INTEGER NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (generation_id, image_index)
);
"""

#: MIGRATIONS[n] takes a database from schema version n to n + 1.
MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1,)
SCHEMA_VERSION = len(MIGRATIONS)

R = TypeVar("R")
_SUBJECT_COLUMNS = frozenset(f.name for f in fields(SubjectRow)) - {"id", "job", "name"}
_GENERATION_COLUMNS = frozenset(f.name for f in fields(GenerationRow)) - {"id", "subject_id"}


class SqliteStore:
    """The embedded state backend: one SQLite file in WAL mode."""

    def __init__(self, path: Path | str, *, scrub: Scrubber | None = None) -> None:
        #: Every text written passes through it: the key and URL queries never land here,
        #: and a lone surrogate from outside cannot make a write fail.
        self._scrub = scrub or Scrubber()
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def _migrate(self) -> None:
        with self.atomic() as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StateConflict(
                    f"state file has schema {version}, newer than this program's "
                    f"{SCHEMA_VERSION}: upgrade lora-pipeline"
                )
            for step in MIGRATIONS[version:]:
                for statement in step.split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it lands, or none of it."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _scrubbed(self, values: dict[str, Any], **more: Any) -> dict[str, Any]:
        cleaned = {k: self._scrub(v) if isinstance(v, str) else v for k, v in values.items()}
        return cleaned | more

    # --- subjects -------------------------------------------------------------------------

    def add_version(
        self, job: str, name: str, fingerprint: str, kind: str, *, state: str, now: float,
        images: Sequence[NewImage] = (), rejections: Sequence[tuple[str, str]] = (),
        warnings: Sequence[str] = (), error: str | None = None,
    ) -> SubjectRow:
        """Record a new version of a subject; earlier versions are marked superseded."""
        scrub = self._scrub
        error = scrub(error) if error is not None else None
        warnings = [scrub(w) for w in warnings]
        rejections = [(scrub(file), scrub(reason)) for file, reason in rejections]
        with self.atomic() as db:
            row = db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM subjects WHERE job = ? AND name = ?",
                (job, name),
            ).fetchone()
            version = int(row[0]) + 1
            db.execute(
                "UPDATE subjects SET superseded = 1 WHERE job = ? AND name = ?", (job, name)
            )
            cursor = db.execute(
                "INSERT INTO subjects (job, name, version, fingerprint, kind, state, image_count,"
                " error, warnings, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (job, name, version, fingerprint, kind, state, len(images), error,
                 json.dumps(list(warnings)) if warnings else None, now, now),
            )
            subject_id = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT OR IGNORE INTO images (subject_id, name, file, sha256, format, caption)"
                " VALUES (?,?,?,?,?,?)",
                [(subject_id, i.name, os.fsencode(i.path), i.sha256, i.format, i.caption)
                 for i in images],
            )
            db.executemany(
                "INSERT INTO rejections (subject_id, name, reason) VALUES (?,?,?)",
                [(subject_id, file, reason) for file, reason in rejections],
            )
        return self.subject(subject_id)

    def latest(self, job: str, name: str) -> SubjectRow | None:
        row = self._db.execute(
            "SELECT * FROM subjects WHERE job = ? AND name = ? ORDER BY version DESC LIMIT 1",
            (job, name),
        ).fetchone()
        return SubjectRow(**row) if row else None

    def subject(self, subject_id: SubjectId) -> SubjectRow:
        row = self._db.execute("SELECT * FROM subjects WHERE id = ?", (subject_id,)).fetchone()
        if row is None:
            raise StateConflict(f"no subject with id {subject_id}")
        return SubjectRow(**row)

    def subjects(self, job: str, *, states: Iterable[str] | None = None) -> list[SubjectRow]:
        """The current (not superseded) version of every subject of a job, by name."""
        query = "SELECT * FROM subjects WHERE job = ? AND superseded = 0"
        args: list[Any] = [job]
        if states is not None:
            wanted = list(states)
            query += f" AND state IN ({','.join('?' * len(wanted))})"
            args += wanted
        return [SubjectRow(**r) for r in self._db.execute(query + " ORDER BY name", args)]

    def update_subject(self, subject_id: SubjectId, *, now: float, **values: Any) -> SubjectRow:
        unknown = values.keys() - _SUBJECT_COLUMNS
        if unknown:
            raise StateConflict(f"unknown subject fields: {sorted(unknown)}")
        if "state" in values and values["state"] not in SUBJECT_STATES:
            raise StateConflict(f"unknown subject state {values['state']!r}")
        values = self._scrubbed(values, updated_at=now)
        assignments = ", ".join(f"{column} = ?" for column in values)
        with self.atomic() as db:
            db.execute(
                f"UPDATE subjects SET {assignments} WHERE id = ?", [*values.values(), subject_id]
            )
        return self.subject(subject_id)

    # --- images and the asset cache -------------------------------------------------------

    def images(self, subject_id: SubjectId) -> list[ImageRow]:
        rows = self._db.execute(
            "SELECT * FROM images WHERE subject_id = ? ORDER BY name", (subject_id,)
        )
        return [ImageRow(**r) for r in rows]

    def rejections(self, subject_id: SubjectId) -> list[RejectionRow]:
        rows = self._db.execute(
            "SELECT * FROM rejections WHERE subject_id = ? ORDER BY name", (subject_id,)
        )
        return [RejectionRow(**r) for r in rows]

    def set_image_asset(self, subject_id: SubjectId, sha256: str, assets_id: str) -> None:
        with self.atomic() as db:
            db.execute(
                "UPDATE images SET assets_id = ? WHERE subject_id = ? AND sha256 = ?",
                (assets_id, subject_id, sha256),
            )

    def cached_asset(self, sha256: str) -> str | None:
        query = "SELECT assets_id FROM assets WHERE sha256 = ?"
        row = self._db.execute(query, (sha256,)).fetchone()
        return str(row[0]) if row else None

    def remember_asset(self, sha256: str, assets_id: str, *, now: float) -> None:
        with self.atomic() as db:
            db.execute(
                "INSERT OR REPLACE INTO assets (sha256, assets_id, uploaded_at) VALUES (?,?,?)",
                (sha256, assets_id, now),
            )

    # --- generations and outputs ----------------------------------------------------------

    def ensure_generations(
        self, subject_id: SubjectId, prompts: Sequence[tuple[int, str, str]], *, now: float
    ) -> list[GenerationRow]:
        """Create the (index, slug, prompt) generations not yet recorded; return them all."""
        with self.atomic() as db:
            db.executemany(
                "INSERT OR IGNORE INTO generations (subject_id, prompt_index, slug, prompt, state,"
                " created_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                [(subject_id, index, slug, text, GEN_PENDING, now, now)
                 for index, slug, text in prompts],
            )
        return self.generations(subject_id)

    def generations(self, subject_id: SubjectId) -> list[GenerationRow]:
        rows = self._db.execute(
            "SELECT * FROM generations WHERE subject_id = ? ORDER BY prompt_index", (subject_id,)
        )
        return [GenerationRow(**r) for r in rows]

    def update_generation(self, generation_id: int, *, now: float, **values: Any) -> None:
        unknown = values.keys() - _GENERATION_COLUMNS
        if unknown:
            raise StateConflict(f"unknown generation fields: {sorted(unknown)}")
        values = self._scrubbed(values, updated_at=now)
        assignments = ", ".join(f"{column} = ?" for column in values)
        with self.atomic() as db:
            db.execute(
                f"UPDATE generations SET {assignments} WHERE id = ?",
                [*values.values(), generation_id],
            )

    def record_output(self, generation_id: int, image_index: int, path: str) -> None:
        with self.atomic() as db:
            db.execute(
                "INSERT OR REPLACE INTO outputs (generation_id, image_index, path) VALUES (?,?,?)",
                (generation_id, image_index, path),
            )

    def outputs(self, subject_id: SubjectId) -> list[OutputRow]:
        rows = self._db.execute(
            "SELECT o.* FROM outputs o JOIN generations g ON g.id = o.generation_id"
            " WHERE g.subject_id = ? ORDER BY g.prompt_index, o.image_index",
            (subject_id,),
        )
        return [OutputRow(**r) for r in rows]

    def integrity_problems(self) -> list[str]:
        """Consistency checks a crash must never break (used by tests and ``status``)."""
        problems = [str(r[0]) for r in self._db.execute("PRAGMA integrity_check") if r[0] != "ok"]
        dangling = self._db.execute(
            "SELECT COUNT(*) FROM subjects WHERE state IN (?, ?, ?) AND task_id IS NULL",
            (TRAINING, TRAINED, GENERATING),
        ).fetchone()[0]
        if dangling:
            problems.append(f"{dangling} subject(s) past submission without a task id")
        lost = self._db.execute(
            "SELECT COUNT(*) FROM generations WHERE state = ? AND task_id IS NULL", (GEN_SUBMITTED,)
        ).fetchone()[0]
        if lost:
            problems.append(f"{lost} generation(s) submitted without a task id")
        return problems
