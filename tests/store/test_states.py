"""The state machines, driven through the table and the store's compare-and-set."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import StateConflict
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import (
    ACTIVE_STATES,
    GEN_PENDING,
    GEN_SUBMITTED,
    GEN_SUBMITTING,
    GENERATION_EDGES,
    GENERATION_STATES,
    PAID_GENERATION_STATE,
    PAID_SUBJECT_STATE,
    SUBJECT_EDGES,
    SUBJECT_STATES,
    TRAINING,
    UPLOADED,
    VALIDATED,
    Why,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "state.db") as opened:
        yield opened


def _subject_in(store: SqliteStore, state: str) -> int:
    row = store.add_version("job", f"s-{state}", "f", "subject", state=VALIDATED, now=0)
    store._db.execute("UPDATE subjects SET state = ? WHERE id = ?", (state, row.id))
    return row.id


@pytest.mark.parametrize(("expected", "to"), list(itertools.product(SUBJECT_STATES, repeat=2)))
def test_the_store_allows_exactly_the_subject_edges_of_the_table(
    store: SqliteStore, expected: str, to: str
) -> None:
    subject = _subject_in(store, expected)
    if (expected, to) in SUBJECT_EDGES:
        assert store.transition(subject, expected=expected, to=to, now=1).state == to
    else:
        with pytest.raises(StateConflict, match=f"from {expected} to {to}"):
            store.transition(subject, expected=expected, to=to, now=1)
        assert store.subject(subject).state == expected


@pytest.mark.parametrize(("expected", "to"), list(itertools.product(GENERATION_STATES, repeat=2)))
def test_the_store_allows_exactly_the_generation_edges_of_the_table(
    store: SqliteStore, expected: str, to: str
) -> None:
    subject = _subject_in(store, "generating")
    (generation,) = store.ensure_generations(subject, [(1, "01-a", "a")], now=0)
    store._db.execute("UPDATE generations SET state = ? WHERE id = ?", (expected, generation.id))
    if (expected, to) in GENERATION_EDGES:
        store.transition_generation(generation.id, expected=expected, to=to, now=1)
        assert store.generations(subject)[0].state == to
    else:
        with pytest.raises(StateConflict):
            store.transition_generation(generation.id, expected=expected, to=to, now=1)
        assert store.generations(subject)[0].state == expected


def test_a_change_by_someone_else_first_wins_and_nothing_is_overwritten(
    store: SqliteStore,
) -> None:
    subject = _subject_in(store, TRAINING)
    store.transition(subject, expected=TRAINING, to="canceled", now=1, error="by a person")
    with pytest.raises(StateConflict, match="is canceled, not training"):
        store.transition(subject, expected=TRAINING, to="trained", now=2, model_name="m")
    row = store.subject(subject)
    assert (row.state, row.error, row.model_name) == ("canceled", "by a person", None)


def test_a_state_is_never_set_by_a_plain_update(store: SqliteStore) -> None:
    subject = _subject_in(store, UPLOADED)
    with pytest.raises(StateConflict, match="state"):
        store.update_subject(subject, now=1, state="submitting")
    (generation,) = store.ensure_generations(subject, [(1, "01-a", "a")], now=0)
    with pytest.raises(StateConflict, match="state"):
        store.update_generation(generation.id, now=1, state=GEN_SUBMITTING)


def _paid_cycles(edges: dict[tuple[str, str], Why], paid: str, allowed: set[Why]) -> bool:
    """True when, leaving out the edges whose reason is in ``allowed``, the paid state can
    be reached again from itself: a way to pay twice without a reason that justifies it."""
    graph: dict[str, set[str]] = {}
    for (source, target), why in edges.items():
        if why not in allowed:
            graph.setdefault(source, set()).add(target)
    seen, todo = set(), list(graph.get(paid, ()))
    while todo:
        state = todo.pop()
        if state == paid:
            return True
        if state not in seen:
            seen.add(state)
            todo.extend(graph.get(state, ()))
    return False


def test_a_training_is_paid_again_only_after_a_person_or_the_services_verdict() -> None:
    assert not _paid_cycles(SUBJECT_EDGES, PAID_SUBJECT_STATE,
                            {Why.PERSON, Why.SERVICE_VERDICT})
    # ... and the check itself can fail: an edge back to `uploaded` on an uncertain answer
    # would be a second payment.
    broken = {**SUBJECT_EDGES, (PAID_SUBJECT_STATE, UPLOADED): Why.PROGRESS}
    assert _paid_cycles(broken, PAID_SUBJECT_STATE, {Why.PERSON, Why.SERVICE_VERDICT})


def test_a_generation_is_paid_again_only_when_it_certainly_was_not_or_its_result_was_lost() -> None:
    reasons = {Why.PERSON, Why.CERTAIN_REFUSAL, Why.RESULT_LOST}
    assert not _paid_cycles(GENERATION_EDGES, PAID_GENERATION_STATE, reasons)
    broken = {**GENERATION_EDGES, (GEN_SUBMITTED, GEN_PENDING): Why.PROGRESS}
    assert _paid_cycles(broken, PAID_GENERATION_STATE, reasons)


def test_random_runs_with_crashes_never_enter_a_paid_state_twice_without_a_reason() -> None:
    """Seeded random walks: each step takes an allowed edge (or 'crashes', which keeps the
    stored state and starts again from it); entries into the paid state are counted."""
    rng = random.Random(7)
    for edges, paid, start in ((SUBJECT_EDGES, PAID_SUBJECT_STATE, VALIDATED),
                               (GENERATION_EDGES, PAID_GENERATION_STATE, GEN_PENDING)):
        for _walk in range(500):
            state, paid_entries, justified = start, 0, 0
            for _step in range(40):
                if rng.random() < 0.2:
                    continue  # a crash and a restart: the store keeps the state
                choices = [(to, why) for (source, to), why in edges.items() if source == state]
                if not choices:
                    break
                state, why = rng.choice(choices)
                if why in (Why.PERSON, Why.SERVICE_VERDICT, Why.CERTAIN_REFUSAL,
                           Why.RESULT_LOST):
                    justified += 1
                if state == paid:
                    paid_entries += 1
            assert paid_entries <= 1 + justified


def test_every_active_state_can_be_canceled_by_a_person() -> None:
    for state in ACTIVE_STATES:
        assert (state, "canceled") in SUBJECT_EDGES
