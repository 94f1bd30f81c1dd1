"""The ledger: one row per paid request, written with the intent to send it.

Every create the service may bill (a training, a txt2img or img2img generation) gets a
row *in the same transaction* as the state change that records the intent to send it, so
a process killed between the intent and the answer still leaves it on the books. A create
sent again after an answer that never came is a new row marked ``resend``: the service may
have billed both, and the ledger must never count less than was paid.

A row's ``outcome`` says what became of it:

- ``None``: unknown (in flight, or the answer was lost): counted as spent;
- ``created``: the service gave a task for it: counted;
- ``not_created``: the service certainly made nothing (a 429, a refusal, a training whose
  name the task list does not hold): not counted.

Before a row is written, a check (:data:`CeilingCheck`) is asked in the same
transaction with what the job and the pass have spent so far: a refusal rolls the whole
change back (the intent included), so no two requests racing can both slip under a
ceiling. The SQL lives here; :class:`~pipeline.store.sqlite.SqliteStore` calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ..errors import SpendCeilingReached

if TYPE_CHECKING:
    from .protocol import Database

#: Schema 5: the ledger (appended to :data:`pipeline.store.sqlite.MIGRATIONS`).
LEDGER_SCHEMA: Final = """
CREATE TABLE ledger (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    subject_id INTEGER NOT NULL REFERENCES subjects (id),
    subject TEXT NOT NULL,
    version INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    kind TEXT,
    generation_id INTEGER REFERENCES generations (id),
    units INTEGER NOT NULL,
    resend INTEGER NOT NULL DEFAULT 0,
    pass_id TEXT NOT NULL,
    outcome TEXT,
    at REAL NOT NULL,
    settled_at REAL
);
CREATE INDEX ledger_by_job ON ledger (job, pass_id);
CREATE INDEX ledger_by_target ON ledger (subject_id, generation_id);
"""

TRAINING: Final = "training"
TXT2IMG: Final = "txt2img"
IMG2IMG: Final = "img2img"
ENDPOINTS: Final = (TRAINING, TXT2IMG, IMG2IMG)
CREATED: Final = "created"
NOT_CREATED: Final = "not_created"
_COUNTED: Final = f"(outcome IS NULL OR outcome != '{NOT_CREATED}')"


@dataclass(frozen=True)
class Tally:
    """Units spent (or to spend): trainings by kind (``subject``, ``style``), images by
    endpoint (``txt2img``, ``img2img``)."""

    trainings: dict[str, int] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)

    @property
    def training_count(self) -> int:
        return sum(self.trainings.values())

    @property
    def image_count(self) -> int:
        return sum(self.images.values())

    def __bool__(self) -> bool:
        return bool(self.training_count or self.image_count)

    def __add__(self, other: Tally) -> Tally:
        return Tally(_added(self.trainings, other.trainings), _added(self.images, other.images))

    @classmethod
    def of(cls, endpoint: str, kind: str | None, units: int) -> Tally:
        """The units of one request: a training of ``kind``, or ``units`` images."""
        if endpoint == TRAINING:
            return cls(trainings={kind or "subject": units})
        return cls(images={endpoint: units})


def _added(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0) + value
    return {key: value for key, value in out.items() if value}


#: ``check(job_spent, pass_spent, this_request)``: None to let it go, or why not.
CeilingCheck = Callable[[Tally, Tally, Tally], "str | None"]


@dataclass(frozen=True)
class Charge:
    """A paid request about to be sent, as the ledger records it.

    ``kind`` is a training's kind; ``generation_id`` a generation's. ``resend`` marks a
    create sent again after an answer that never came. ``void_open``: the open rows of the
    same target certainly made nothing (a training whose name the task list does not hold).
    ``check`` is the spend ceiling, asked in the same transaction as the row is written
    (None: no ceiling).
    """

    job: str
    subject_id: int
    subject: str
    version: int
    endpoint: str
    units: int
    pass_id: str
    kind: str | None = None
    generation_id: int | None = None
    resend: bool = False
    void_open: bool = False
    check: CeilingCheck | None = field(default=None, compare=False, repr=False)

    @property
    def tally(self) -> Tally:
        return Tally.of(self.endpoint, self.kind, self.units)


@dataclass(frozen=True)
class LedgerEntry:
    """One row of the ledger."""

    id: int
    job: str
    subject_id: int
    subject: str
    version: int
    endpoint: str
    kind: str | None
    generation_id: int | None
    units: int
    resend: int
    pass_id: str
    outcome: str | None
    at: float
    settled_at: float | None

    @property
    def counted(self) -> bool:
        """Whether it counts as spent: unless the service certainly made nothing."""
        return self.outcome != NOT_CREATED

    @property
    def tally(self) -> Tally:
        return Tally.of(self.endpoint, self.kind, self.units) if self.counted else Tally()


def add(db: Database, charge: Charge, *, now: float) -> None:
    """Write ``charge``'s row, after its ceiling check, inside the caller's transaction
    (its target's open rows marked ``not_created`` first when it says ``void_open``).
    Raises :class:`SpendCeilingReached` when the check refuses; the caller's transaction
    then rolls back, so nothing of the change is kept.
    """
    if charge.void_open:
        settle(db, charge.subject_id, charge.generation_id, NOT_CREATED, now=now,
               every_open=True)
    if charge.check is not None:
        job_spent = tally(db, charge.job)
        pass_spent = tally(db, charge.job, pass_id=charge.pass_id)
        refusal = charge.check(job_spent, pass_spent, charge.tally)
        if refusal is not None:
            raise SpendCeilingReached(refusal)
    db.execute(
        "INSERT INTO ledger (job, subject_id, subject, version, endpoint, kind, generation_id,"
        " units, resend, pass_id, at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (charge.job, charge.subject_id, charge.subject, charge.version, charge.endpoint,
         charge.kind, charge.generation_id, charge.units, int(charge.resend), charge.pass_id,
         now),
    )


def settle(
    db: Database, subject_id: int, generation_id: int | None, outcome: str, *,
    now: float, every_open: bool,
) -> None:
    """Record what became of the newest open row of a target (a subject's training when
    ``generation_id`` is None), or of all its open rows with ``every_open``."""
    target = "subject_id = ? AND generation_id IS NULL AND endpoint = ?"
    args: list[object] = [subject_id, TRAINING]
    if generation_id is not None:
        target, args = "subject_id = ? AND generation_id = ?", [subject_id, generation_id]
    which = f"{target} AND outcome IS NULL"
    if not every_open:
        which = f"id = (SELECT MAX(id) FROM ledger WHERE {which})"
    db.execute(f"UPDATE ledger SET outcome = ?, settled_at = ? WHERE {which}",
               [outcome, now, *args])


def tally(
    db: Database, job: str, *, pass_id: str | None = None,
    subject_id: int | None = None,
) -> Tally:
    """What a job (one pass of it, one subject version of it) has spent, as counted."""
    query = f"SELECT endpoint, kind, SUM(units) FROM ledger WHERE job = ? AND {_COUNTED}"
    args: list[object] = [job]
    if pass_id is not None:
        query += " AND pass_id = ?"
        args.append(pass_id)
    if subject_id is not None:
        query += " AND subject_id = ?"
        args.append(subject_id)
    rows = db.execute(query + " GROUP BY endpoint, kind", args)
    return sum_tallies(Tally.of(str(r[0]), r[1], int(r[2])) for r in rows)


def entries(db: Database, job: str) -> list[LedgerEntry]:
    """Every row of a job, oldest first."""
    rows = db.execute("SELECT * FROM ledger WHERE job = ? ORDER BY id", (job,))
    return [LedgerEntry(**r) for r in rows]


def sum_tallies(tallies: Iterable[Tally]) -> Tally:
    total = Tally()
    for one in tallies:
        total = total + one
    return total
