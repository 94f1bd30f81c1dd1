"""The state store: the single source of truth of what was done, in SQLite (WAL).

:class:`SqliteStore` is the embedded backend of :class:`~pipeline.store.protocol.StateStore`;
its queries are :class:`~pipeline.store.queries.SqlStore`'s, shared with PostgreSQL.

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
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from ..errors import StateConflict, StoreError
from ..redact import Scrubber
from . import ledger as ledger_sql
from .queries import SqlStore

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


class SqliteStore(SqlStore):
    """The embedded state backend: one SQLite file in WAL mode.

    ``read_only=True`` opens an existing file for looking only (``status``, ``report``, the
    progress view): a missing file is an error rather than created, an older schema is an
    error rather than migrated, and :meth:`atomic` is refused. Close it when done, or use
    it as a context manager: ``with SqliteStore(path) as store: ...``.
    """

    _db: sqlite3.Connection

    def __init__(
        self, path: Path | str, *, scrub: Scrubber | None = None, read_only: bool = False
    ) -> None:
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


    def _file_problems(self) -> list[str]:
        return [str(r[0]) for r in self._db.execute("PRAGMA integrity_check") if r[0] != "ok"]
