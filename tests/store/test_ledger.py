"""The ledger: a row with each intent to pay, in its transaction; what counts as spent."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pipeline.errors import SpendCeilingReached, StateConflict
from pipeline.store.ledger import CREATED, NOT_CREATED, Charge, Tally
from pipeline.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore
from pipeline.store.states import (
    GEN_PENDING,
    GEN_SUBMITTING,
    GENERATING,
    SUBMITTING,
    TRAINING,
    UPLOADED,
    VALIDATED,
)
from tests.conftest import closed_after_test, force_state, reopened


@pytest.fixture
def store(any_store: SqliteStore) -> SqliteStore:
    """Each test that takes ``store`` runs on SQLite and on PostgreSQL."""
    return any_store


def _subject(store: SqliteStore, state: str = UPLOADED, name: str = "alice") -> int:
    row = store.add_version("job", name, "fp", "subject", state=VALIDATED, now=1.0)
    force_state(store, row.id, now=1.0, state=state)
    return row.id


def _training(subject_id: int, **more: object) -> Charge:
    values: dict[str, object] = dict(job="job", subject_id=subject_id, subject="alice",
                                     version=1, endpoint="training", kind="subject", units=1,
                                     pass_id="p1")
    values.update(more)
    return Charge(**values)  # type: ignore[arg-type]


def _images(subject_id: int, generation_id: int, units: int = 2, **more: object) -> Charge:
    values: dict[str, object] = dict(job="job", subject_id=subject_id, subject="alice",
                                     version=1, endpoint="txt2img", units=units, pass_id="p1",
                                     generation_id=generation_id)
    values.update(more)
    return Charge(**values)  # type: ignore[arg-type]


def test_the_intent_and_its_row_land_together(store: SqliteStore) -> None:
    subject = _subject(store)
    store.transition(subject, expected=UPLOADED, to=SUBMITTING, now=5.0,
                     charge=_training(subject), training_name="n")
    # Another connection (a process after a kill) sees both, with the outcome unknown.
    with reopened(store, read_only=True) as after_a_kill:
        [entry] = after_a_kill.ledger("job")
        assert after_a_kill.subject(subject).state == SUBMITTING
    assert (entry.subject, entry.version, entry.endpoint, entry.kind, entry.units) == (
        "alice", 1, "training", "subject", 1)
    assert (entry.outcome, entry.at, entry.pass_id, entry.resend) == (None, 5.0, "p1", 0)
    assert entry.counted and store.spent("job") == Tally(trainings={"subject": 1})


def test_a_lost_compare_and_set_leaves_no_row(store: SqliteStore) -> None:
    subject = _subject(store, state=TRAINING)  # someone moved it first
    with pytest.raises(StateConflict):
        store.transition(subject, expected=UPLOADED, to=SUBMITTING, now=5.0,
                         charge=_training(subject))
    assert store.ledger("job") == []


def test_a_refused_ceiling_writes_neither_the_row_nor_the_intent(store: SqliteStore) -> None:
    subject = _subject(store)
    asked: list[tuple[Tally, Tally, Tally]] = []

    def ceiling(job: Tally, this_pass: Tally, request: Tally) -> str | None:
        asked.append((job, this_pass, request))
        return "over the ceiling"

    with pytest.raises(SpendCeilingReached, match="over the ceiling"):
        store.transition(subject, expected=UPLOADED, to=SUBMITTING, now=5.0,
                         charge=_training(subject, check=ceiling), training_name="n")
    assert store.ledger("job") == []
    assert store.subject(subject).state == UPLOADED and store.subject(subject).training_name is None
    assert asked == [(Tally(), Tally(), Tally(trainings={"subject": 1}))]


def test_the_ceiling_sees_the_job_and_the_pass_apart(store: SqliteStore) -> None:
    subject = _subject(store, state=GENERATING)
    [first, second] = store.ensure_generations(subject, [(1, "01-a", "a"), (2, "02-b", "b")],
                                               now=1.0)
    store.transition_generation(first.id, expected=GEN_PENDING, to=GEN_SUBMITTING, now=2.0,
                                charge=_images(subject, first.id, pass_id="earlier"))
    seen: list[tuple[Tally, Tally]] = []
    store.transition_generation(
        second.id, expected=GEN_PENDING, to=GEN_SUBMITTING, now=3.0,
        charge=_images(subject, second.id, units=3,
                       check=lambda job, now, _request: seen.append((job, now)) or None))
    assert seen == [(Tally(images={"txt2img": 2}), Tally())]
    assert store.spent("job") == Tally(images={"txt2img": 5})
    assert store.spent("job", pass_id="p1") == Tally(images={"txt2img": 3})
    assert store.spent("other job") == Tally()


def test_a_resend_is_a_row_of_its_own_and_both_count(store: SqliteStore) -> None:
    subject = _subject(store, state=GENERATING)
    [generation] = store.ensure_generations(subject, [(1, "01-a", "a")], now=1.0)
    store.transition_generation(generation.id, expected=GEN_PENDING, to=GEN_SUBMITTING,
                                now=2.0, charge=_images(subject, generation.id))
    store.update_generation(generation.id, now=3.0, uncertain=1,
                            charge=_images(subject, generation.id, resend=True))
    store.settle_charge(subject, generation_id=generation.id, outcome=CREATED, now=4.0)
    first, again = store.ledger("job")
    assert (first.outcome, first.resend) == (None, 0)  # unanswered: may have been billed
    assert (again.outcome, again.resend, again.settled_at) == (CREATED, 1, 4.0)
    assert store.spent("job") == Tally(images={"txt2img": 4})
    assert store.generations(subject)[0].uncertain == 1


def test_what_the_service_certainly_did_not_make_does_not_count(store: SqliteStore) -> None:
    subject = _subject(store, state=GENERATING)
    [generation] = store.ensure_generations(subject, [(1, "01-a", "a")], now=1.0)
    store.transition_generation(generation.id, expected=GEN_PENDING, to=GEN_SUBMITTING,
                                now=2.0, charge=_images(subject, generation.id))
    store.settle_charge(subject, generation_id=generation.id, outcome=NOT_CREATED, now=3.0)
    assert store.spent("job") == Tally()
    assert not store.ledger("job")[0].counted


def test_a_training_resent_after_its_name_was_not_found_voids_the_open_row(
    store: SqliteStore,
) -> None:
    subject = _subject(store)
    store.transition(subject, expected=UPLOADED, to=SUBMITTING, now=2.0,
                     charge=_training(subject))
    store.update_subject(subject, now=3.0, charge=_training(subject, resend=True,
                                                             void_open=True))
    store.settle_charge(subject, outcome=CREATED, now=4.0, every_open=True)
    first, again = store.ledger("job")
    assert (first.outcome, again.outcome, again.resend) == (NOT_CREATED, CREATED, 1)
    assert store.spent("job") == Tally(trainings={"subject": 1})


def test_a_state_of_schema_4_gets_an_empty_ledger(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path, isolation_level=None)
    for step in MIGRATIONS[:4]:
        db.executescript(step)
    db.execute("INSERT INTO subjects (job, name, version, fingerprint, kind, state,"
               " created_at, updated_at) VALUES ('job', 'alice', 1, 'fp', 'subject', 'done', 1, 1)")
    db.execute("PRAGMA user_version = 4")
    db.close()
    store = closed_after_test(SqliteStore(path))
    assert store.schema_version == SCHEMA_VERSION == 5
    assert store.latest("job", "alice").state == "done"
    assert store.ledger("job") == [] and store.spent("job") == Tally()


def test_tallies_add_up_by_kind_and_endpoint() -> None:
    total = (Tally(trainings={"subject": 1}, images={"txt2img": 2})
             + Tally(trainings={"style": 1}, images={"txt2img": 1, "img2img": 4}))
    assert total == Tally(trainings={"subject": 1, "style": 1},
                          images={"txt2img": 3, "img2img": 4})
    assert (total.training_count, total.image_count, bool(Tally())) == (2, 7, False)
