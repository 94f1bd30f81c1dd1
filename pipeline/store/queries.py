"""The queries every SQL backend of the store shares: one class, two engines.

:class:`SqlStore` implements :class:`~pipeline.store.protocol.StateStore` over a DB-API
connection (:class:`~pipeline.store.protocol.Database`). Its SQL is the dialect SQLite and
PostgreSQL both speak (``ON CONFLICT``, ``RETURNING``), written with ``?`` placeholders; the
PostgreSQL connection translates them (:mod:`pipeline.store.postgres`). A backend supplies
the connection, :meth:`SqlStore.atomic` (one transaction; nested, a savepoint) and its
migrations: :class:`~pipeline.store.sqlite.SqliteStore` and
:class:`~pipeline.store.postgres.PostgresStore`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import fields
from typing import Any

from ..errors import StateConflict
from ..redact import Scrubber
from . import ledger as ledger_sql
from .ledger import Charge, LedgerEntry, Tally
from .protocol import (
    Database,
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

#: Columns an update may set; ``state`` only through :meth:`SqlStore.transition`.
_SUBJECT_COLUMNS = frozenset(f.name for f in fields(SubjectRow)) - {"id", "job", "name", "state"}
_GENERATION_COLUMNS = (
    frozenset(f.name for f in fields(GenerationRow)) - {"id", "subject_id", "state"}
)


class SqlStore:
    """The state's queries; a backend gives ``_db``, ``_scrub`` and :meth:`atomic`."""

    _db: Database
    #: Every text written passes through it: the key and URL queries never land here,
    #: and a lone surrogate from outside cannot make a write fail.
    _scrub: Scrubber

    def atomic(self) -> AbstractContextManager[Database]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _before_charge(self, db: Database, charge: Charge, *, now: float) -> None:
        """Called in the transaction of a paid request's intent, before its ledger row and
        ceiling check: a backend whose transactions do not exclude each other serializes
        them here."""

    def _file_problems(self) -> list[str]:
        """What the engine itself says is wrong with the database (none by default)."""
        return []

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
            subject_id = int(db.execute(
                "INSERT INTO subjects (job, name, version, fingerprint, kind, state, image_count,"
                " error, warnings, frozen, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
                (job, name, version, fingerprint, kind, state, len(images), error,
                 json.dumps(list(warnings)) if warnings else None, frozen, now, now),
            ).fetchone()[0])
            db.executemany(
                "INSERT INTO images (subject_id, name, file, sha256, format, caption,"
                " faces, sharpness, changes) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
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
                self._before_charge(db, charge, now=now)
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
                "INSERT INTO assets (sha256, assets_id, uploaded_at) VALUES (?,?,?)"
                " ON CONFLICT (sha256) DO UPDATE SET assets_id = excluded.assets_id,"
                " uploaded_at = excluded.uploaded_at",
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
                "INSERT INTO generations (subject_id, prompt_index, slug, prompt, state,"
                " created_at, updated_at, init_image, init_sha256, strength)"
                " VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                rows,
            )
        return self.generations(subject_id)

    def keep_init_images(self, images: Mapping[str, bytes], *, now: float) -> None:
        """Keep init images' bytes by their sha256 (one already kept stays as it is)."""
        with self.atomic() as db:
            db.executemany(
                "INSERT INTO init_images (sha256, data, kept_at) VALUES (?,?,?)"
                " ON CONFLICT DO NOTHING",
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
                "INSERT INTO outputs (generation_id, image_index, path) VALUES (?,?,?)"
                " ON CONFLICT (generation_id, image_index) DO UPDATE SET path = excluded.path",
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
            row = db.execute(
                "INSERT INTO requests (job, subject, action, args, created_at)"
                " VALUES (?,?,?,?,?) RETURNING id",
                (job, self._scrub(subject), action, json.dumps(args) if args else None, now),
            ).fetchone()
        return int(row[0])

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
        problems = self._file_problems()
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
