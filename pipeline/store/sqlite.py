"""The state store: the single source of truth of what was done, in SQLite (WAL).

:class:`SqliteStore` is the embedded backend of :class:`~pipeline.store.protocol.StateStore`.

Every write goes through :meth:`SqliteStore.atomic`, one ``BEGIN IMMEDIATE`` transaction
(a nested use is a savepoint of it). The schema version lives in ``PRAGMA user_version`` and
:data:`MIGRATIONS` brings an older file up to date when a pass opens it; that is the only
time opening takes the write lock. ``SqliteStore(path, read_only=True)`` is how commands
that only look open it: never created, migrated or locked for writing, so a look never
waits on a pass. A file that is not a sound database is refused on open with
:class:`~pipeline.errors.StoreError`, naming it and what to do.

Where the file lives, and the checks around opening it for a job, are in
:mod:`pipeline.store.location`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from ..errors import StateConflict, StoreError
from ..redact import Scrubber
from . import ledger as ledger_sql
from .ledger import Charge, LedgerEntry, Tally
from .protocol import (
    GenerationRow,
    ImageRow,
    InitImageUse,
    NewImage,
    NewRejection,
    OutputRow,
    RejectionRow,
    RequestRow,
    SubjectId,
    SubjectRow,
)
from .states import (
    GEN_PENDING,
    GEN_SUBMITTED,
    GENERATING,
    TRAINED,
    TRAINING,
    check_generation,
    check_subject,
)

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

_SCHEMA_V2 = """
ALTER TABLE subjects ADD COLUMN frozen TEXT;
ALTER TABLE subjects ADD COLUMN inbox_seen REAL;
ALTER TABLE generations ADD COLUMN uncertain INTEGER NOT NULL DEFAULT 0;
CREATE TABLE requests (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    subject TEXT NOT NULL,
    action TEXT NOT NULL,
    args TEXT,
    created_at REAL NOT NULL,
    done_at REAL,
    outcome TEXT
);
CREATE INDEX requests_open ON requests (job, done_at);
"""

_SCHEMA_V3 = """
ALTER TABLE images ADD COLUMN faces INTEGER;
ALTER TABLE images ADD COLUMN sharpness REAL;
ALTER TABLE images ADD COLUMN changes TEXT;
ALTER TABLE rejections ADD COLUMN thumbnail BLOB;
"""

# img2img: a generation's init image, and the init images' bytes by content, kept when the
# subject is taken in (its folder or the job's picture may change or go away after).
_SCHEMA_V4 = """
ALTER TABLE generations ADD COLUMN init_image TEXT;
ALTER TABLE generations ADD COLUMN init_sha256 TEXT;
ALTER TABLE generations ADD COLUMN strength REAL;
CREATE TABLE init_images (
    sha256 TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    kept_at REAL NOT NULL
);
"""

#: MIGRATIONS[n] takes a database from schema version n to n + 1. Schema 5 is the ledger of
#: paid requests (:mod:`pipeline.store.ledger`): a job upgraded to it has no rows for what it
#: paid before.
MIGRATIONS: tuple[str, ...] = (
    _SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3, _SCHEMA_V4, ledger_sql.LEDGER_SCHEMA,
)
SCHEMA_VERSION = len(MIGRATIONS)

R = TypeVar("R")
#: Columns an update may set; ``state`` only through :meth:`SqliteStore.transition`.
_SUBJECT_COLUMNS = frozenset(f.name for f in fields(SubjectRow)) - {"id", "job", "name", "state"}
_GENERATION_COLUMNS = (
    frozenset(f.name for f in fields(GenerationRow)) - {"id", "subject_id", "state"}
)


def _refuse_links(path: Path) -> None:
    """The state is the pipeline's own: a link planted in its place is never written through."""
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.is_symlink():
            raise StateConflict(
                f"{file} is a link: the state file must be a plain file of the pipeline's; "
                "remove the link (nothing was written through it)"
            )


#: Seconds a connection waits for another one's lock before giving up.
BUSY_TIMEOUT = 30.0


def _connect(path: Path | str, *, read_only: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are ours, see ``atomic``). Read-only
    goes through a ``mode=ro`` URI: SQLite then neither creates the file nor writes to it."""
    if not read_only:
        return sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT)
    uri = "file:" + quote(os.fsencode(Path(path).absolute())) + "?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT)


def _unusable(path: Path | str, exc: sqlite3.Error) -> StoreError:
    """What a person reads instead of a traceback when the file cannot be opened."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return _corrupt(path, str(exc))
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreError(
            f"{path} stayed locked by another process for {BUSY_TIMEOUT:.0f} s ({exc}): "
            "try again once it is done"
        )
    return StoreError(
        f"{path} cannot be opened as the state file ({exc}): check that it is a file this "
        "user may read and write, in a folder it may write to"
    )


def _corrupt(path: Path | str, reason: str) -> StoreError:
    return StoreError(
        f"{path} is not a sound state database ({reason}); nothing was done with it. Restore "
        "it from a backup; or, to start afresh, move it away together with the job's outbox "
        "folder (a new state file beside old results would pay for them again)"
    )


class SqliteStore:
    """The embedded state backend: one SQLite file in WAL mode.

    ``read_only=True`` opens an existing file for looking only (``status``, ``report``, the
    progress view): a missing file is an error rather than created, an older schema is an
    error rather than migrated, and :meth:`atomic` is refused. Close it when done, or use
    it as a context manager: ``with SqliteStore(path) as store: ...``.
    """

    def __init__(
        self, path: Path | str, *, scrub: Scrubber | None = None, read_only: bool = False
    ) -> None:
        #: Every text written passes through it: the key and URL queries never land here,
        #: and a lone surrogate from outside cannot make a write fail.
        self._scrub = scrub or Scrubber()
        self._path = path
        self._read_only = read_only
        self._savepoints = 0
        if str(path) != ":memory:":
            if not read_only:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Even a reader writes the -shm file: never through a planted link.
            _refuse_links(Path(path))
        try:
            self._db = _connect(path, read_only=read_only)
        except sqlite3.Error as exc:
            raise _unusable(path, exc) from exc
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        """Check the file and set the connection up; every failure becomes a
        :class:`StoreError` that names the file, never a traceback from later on."""
        db = self._db
        try:
            problems = [str(r[0]) for r in db.execute("PRAGMA quick_check") if r[0] != "ok"]
            if problems:
                raise _corrupt(self._path, f"integrity check: {problems[0]}")
            db.row_factory = sqlite3.Row
            if not self._read_only:
                if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
                db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise _unusable(self._path, exc) from exc

    @property
    def read_only(self) -> bool:
        return self._read_only

    def _migrate(self) -> None:
        """Bring an older file up to date. The write lock is taken only then: opening an
        up-to-date file (nearly every open) only reads, so it never waits on a pass."""
        if self.schema_version < SCHEMA_VERSION and not self._read_only:
            with self.atomic() as db:
                # Looked at again under the lock: another process may have done it meanwhile.
                version = int(db.execute("PRAGMA user_version").fetchone()[0])
                if version < SCHEMA_VERSION:
                    for step in MIGRATIONS[version:]:
                        for statement in step.split(";"):
                            if statement.strip():
                                db.execute(statement)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self._path} has schema {version}, newer than this program's "
                f"{SCHEMA_VERSION}: upgrade lora-pipeline"
            )
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"{self._path} has schema {version}, older than this program's "
                f"{SCHEMA_VERSION}, and this command only reads it: run a pass of the job "
                "(lora-pipeline run JOB) to upgrade it, then ask again"
            )

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it lands, or none of it.

        Re-entrant: inside another ``atomic`` block it is a savepoint of that transaction,
        so a method that writes atomically can be part of a bigger atomic change. An error
        inside undoes that inner part, and the outer block decides about the rest.

        When COMMIT itself fails (a deferred constraint, a full disk) the transaction is
        rolled back before the error goes on: the connection is never left inside a
        half-done transaction, holding the write lock and refusing the next ``atomic``.
        """
        if self._read_only:
            raise StoreError(f"{self._path} was opened read-only: this command cannot change it")
        if self._db.in_transaction:
            with self._savepoint():
                yield self._db
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._rollback()
            raise
        try:
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        self._savepoints += 1
        name = f"atomic_{self._savepoints}"
        try:
            self._db.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled everything back itself
                    self._db.execute(f"ROLLBACK TO {name}")
                    self._db.execute(f"RELEASE {name}")
                raise
            self._db.execute(f"RELEASE {name}")
        finally:
            self._savepoints -= 1

    def _rollback(self) -> None:
        """Undo the open transaction, if SQLite has not already; the error that brought us
        here is the one worth raising, so a failing ROLLBACK does not replace it."""
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection; closing again does nothing. A transaction still open is
        rolled back by SQLite."""
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
        images: Sequence[NewImage] = (), rejections: Sequence[NewRejection] = (),
        warnings: Sequence[str] = (), error: str | None = None, frozen: str | None = None,
    ) -> SubjectRow:
        """Record a new version of a subject; earlier versions are marked superseded.
        ``frozen`` is the version's resolved settings (JSON), kept with it for good.
        A rejection is ``(file, reason)``, or ``(file, reason, thumbnail)`` with a small JPEG
        of the photo for the report."""
        scrub = self._scrub
        error = scrub(error) if error is not None else None
        warnings = [scrub(w) for w in warnings]
        refused = [(scrub(r[0]), scrub(r[1]), r[2] if len(r) > 2 else None)
                   for r in rejections]
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
                " error, warnings, frozen, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (job, name, version, fingerprint, kind, state, len(images), error,
                 json.dumps(list(warnings)) if warnings else None, frozen, now, now),
            )
            subject_id = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT OR IGNORE INTO images (subject_id, name, file, sha256, format, caption,"
                " faces, sharpness, changes) VALUES (?,?,?,?,?,?,?,?,?)",
                [(subject_id, i.name, os.fsencode(i.path), i.sha256, i.format, i.caption,
                  i.faces, i.sharpness, json.dumps(list(i.changes)) if i.changes else None)
                 for i in images],
            )
            db.executemany(
                "INSERT INTO rejections (subject_id, name, reason, thumbnail) VALUES (?,?,?,?)",
                [(subject_id, file, reason, thumbnail) for file, reason, thumbnail in refused],
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

    def update_subject(
        self, subject_id: SubjectId, *, now: float, charge: Charge | None = None, **values: Any
    ) -> SubjectRow:
        """Set fields of a subject other than its state (see :meth:`transition`, also for
        ``charge``: a paid request sent again while the subject stays ``submitting``)."""
        self._update("subjects", _SUBJECT_COLUMNS, subject_id, None, now, values, charge)
        return self.subject(subject_id)

    def transition(
        self, subject_id: SubjectId, *, expected: str, to: str, now: float,
        charge: Charge | None = None, **values: Any,
    ) -> SubjectRow:
        """Move a subject from ``expected`` to ``to`` (and set ``values``) in one
        compare-and-set; :class:`StateConflict` when the table forbids the change or the
        subject is no longer ``expected`` (someone else moved it first).

        With ``charge`` (this change records the intent to send a paid request), its ledger
        row is written in the same transaction, after its ceiling check: both land or
        neither (:class:`~pipeline.errors.SpendCeilingReached` when the ceiling refuses)."""
        check_subject(expected, to)
        self._update("subjects", _SUBJECT_COLUMNS, subject_id, expected, now,
                     {**values, "state": to}, charge)
        return self.subject(subject_id)

    def _update(
        self, table: str, allowed: frozenset[str], row_id: int, expected: str | None,
        now: float, values: dict[str, Any], charge: Charge | None = None,
    ) -> None:
        unknown = values.keys() - allowed - ({"state"} if expected is not None else set())
        if unknown:
            raise StateConflict(f"{table}: fields that cannot be set here: {sorted(unknown)}")
        values = self._scrubbed(values, updated_at=now)
        assignments = ", ".join(f"{column} = ?" for column in values)
        query = f"UPDATE {table} SET {assignments} WHERE id = ?"
        args = [*values.values(), row_id]
        if expected is not None:
            query += " AND state = ?"
            args.append(expected)
        with self.atomic() as db:
            if charge is not None:
                ledger_sql.add(db, charge, now=now)
            if db.execute(query, args).rowcount == 1:
                return
            found = db.execute(f"SELECT state FROM {table} WHERE id = ?", (row_id,)).fetchone()
            # Raised inside the transaction: a charge written with it is undone too.
            if found is None:
                raise StateConflict(f"no {table[:-1]} with id {row_id}")
            raise StateConflict(
                f"{table[:-1]} {row_id} is {found[0]}, not {expected}: it changed meanwhile"
            )

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
        assets_id = self._scrub(assets_id)
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
        assets_id = self._scrub(assets_id)
        with self.atomic() as db:
            db.execute(
                "INSERT OR REPLACE INTO assets (sha256, assets_id, uploaded_at) VALUES (?,?,?)",
                (sha256, assets_id, now),
            )

    # --- generations and outputs ----------------------------------------------------------

    def ensure_generations(
        self, subject_id: SubjectId, prompts: Sequence[tuple[int, str, str]], *, now: float,
        img2img: Mapping[int, InitImageUse] | None = None,
    ) -> list[GenerationRow]:
        """Create the (index, slug, prompt) generations not yet recorded; return them all.
        A prompt whose index is in ``img2img`` is made from that init image (whose bytes
        :meth:`keep_init_images` must have kept)."""
        starts = img2img or {}
        rows = []
        for index, slug, text in prompts:
            init = starts.get(index)
            rows.append((subject_id, index, slug, text, GEN_PENDING, now, now,
                         None if init is None else self._scrub(init.image),
                         None if init is None else init.sha256,
                         None if init is None else init.strength))
        with self.atomic() as db:
            db.executemany(
                "INSERT OR IGNORE INTO generations (subject_id, prompt_index, slug, prompt, state,"
                " created_at, updated_at, init_image, init_sha256, strength)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
        return self.generations(subject_id)

    def keep_init_images(self, images: Mapping[str, bytes], *, now: float) -> None:
        """Keep init images' bytes by their sha256 (one already kept stays as it is)."""
        with self.atomic() as db:
            db.executemany(
                "INSERT OR IGNORE INTO init_images (sha256, data, kept_at) VALUES (?,?,?)",
                [(sha256, data, now) for sha256, data in images.items()],
            )

    def init_image(self, sha256: str) -> bytes | None:
        """The bytes of a kept init image; None when none of that sha256 is kept."""
        row = self._db.execute(
            "SELECT data FROM init_images WHERE sha256 = ?", (sha256,)
        ).fetchone()
        return bytes(row[0]) if row else None

    def generations(self, subject_id: SubjectId) -> list[GenerationRow]:
        rows = self._db.execute(
            "SELECT * FROM generations WHERE subject_id = ? ORDER BY prompt_index", (subject_id,)
        )
        return [GenerationRow(**r) for r in rows]

    def update_generation(
        self, generation_id: int, *, now: float, charge: Charge | None = None, **values: Any
    ) -> None:
        """Set fields of a generation other than its state; with ``charge``, the ledger row
        of a paid request sent again while it stays ``submitting`` (see :meth:`transition`)."""
        self._update("generations", _GENERATION_COLUMNS, generation_id, None, now, values,
                     charge)

    def transition_generation(
        self, generation_id: int, *, expected: str, to: str, now: float,
        charge: Charge | None = None, **values: Any,
    ) -> None:
        """The compare-and-set of a generation's state, with its ledger row when it is the
        intent of a paid request; see :meth:`transition`."""
        check_generation(expected, to)
        self._update("generations", _GENERATION_COLUMNS, generation_id, expected, now,
                     {**values, "state": to}, charge)

    # --- the ledger of paid requests (SQL in :mod:`pipeline.store.ledger`) -----------------

    def settle_charge(
        self, subject_id: SubjectId, *, generation_id: int | None = None, outcome: str,
        now: float, every_open: bool = False,
    ) -> None:
        """Record what became of the newest open ledger row of a subject's training (or of
        a generation): ``created`` or ``not_created``; every open one with ``every_open``."""
        with self.atomic() as db:
            ledger_sql.settle(db, subject_id, generation_id, outcome, now=now,
                          every_open=every_open)

    def ledger(self, job: str) -> list[LedgerEntry]:
        """Every paid request of a job, oldest first."""
        return ledger_sql.entries(self._db, job)

    def spent(self, job: str, *, pass_id: str | None = None) -> Tally:
        """What a job (or one pass of it) has spent, as the ledger counts it."""
        return ledger_sql.tally(self._db, job, pass_id=pass_id)

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

    # --- requests from people ------------------------------------------------------------

    def add_request(
        self, job: str, subject: str, action: str, args: dict[str, Any], *, now: float
    ) -> int:
        with self.atomic() as db:
            cursor = db.execute(
                "INSERT INTO requests (job, subject, action, args, created_at) VALUES (?,?,?,?,?)",
                (job, self._scrub(subject), action, json.dumps(args) if args else None, now),
            )
        return int(cursor.lastrowid or 0)

    def open_requests(self, job: str) -> list[RequestRow]:
        rows = self._db.execute(
            "SELECT * FROM requests WHERE job = ? AND done_at IS NULL ORDER BY id", (job,)
        )
        return [RequestRow(**r) for r in rows]

    def request(self, request_id: int) -> RequestRow:
        row = self._db.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
        if row is None:
            raise StateConflict(f"no request with id {request_id}")
        return RequestRow(**row)

    def finish_request(self, request_id: int, *, now: float, outcome: str) -> None:
        with self.atomic() as db:
            db.execute(
                "UPDATE requests SET done_at = ?, outcome = ? WHERE id = ? AND done_at IS NULL",
                (now, self._scrub(outcome), request_id),
            )

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
        unkept = self._db.execute(
            "SELECT COUNT(*) FROM generations WHERE init_sha256 IS NOT NULL AND init_sha256"
            " NOT IN (SELECT sha256 FROM init_images)"
        ).fetchone()[0]
        if unkept:
            problems.append(f"{unkept} img2img generation(s) whose init image is not kept")
        return problems
