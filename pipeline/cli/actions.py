"""What a person can ask of one subject outside a run: ``retry`` and ``cancel``."""

from __future__ import annotations

from ..errors import StateConflict
from ..store.protocol import StateStore, SubjectRow
from ..store.states import (
    CANCELED,
    DONE,
    FAILED,
    GEN_FAILED,
    GEN_PENDING,
    GENERATING,
    REJECTED,
    SETTLED_STATES,
    TRAINED,
    TRAINING,
    UPLOADED,
)


def _current(store: StateStore, job: str, name: str) -> SubjectRow:
    subject = store.latest(job, name)
    if subject is None:
        raise StateConflict(f"job {job!r} has no subject {name!r}: `status` lists them")
    return subject


def retry_subject(store: StateStore, job: str, name: str, *, now: float) -> str:
    """Make a failed, canceled or partly failed subject go again on the next run.

    A training that failed on the service is trained again (a new, paid training). One that
    only ran past a deadline is checked again first: it may have finished meanwhile.
    """
    subject = _current(store, job, name)
    if subject.state == REJECTED:
        raise StateConflict(
            f"{name} was rejected ({subject.error or 'see its files'}): fix the folder; "
            "the next run takes the new version"
        )
    if subject.state == DONE:
        failed = [g for g in store.generations(subject.id) if g.state == GEN_FAILED]
        if not failed:
            raise StateConflict(f"{name} is done and none of its prompts failed")
        for generation in failed:
            store.transition_generation(
                generation.id, expected=GEN_FAILED, to=GEN_PENDING, now=now, task_id=None,
                submissions=0, uncertain=0, error=None,
            )
        store.transition(subject.id, expected=DONE, to=GENERATING, now=now, error=None)
        return f"{name}: {len(failed)} failed prompt(s) will be generated again"
    if subject.state not in (FAILED, CANCELED):
        raise StateConflict(f"{name} is {subject.state}, not failed: nothing to retry")
    if subject.task_id and subject.task_status not in ("FAILED", "CANCELED"):
        state = TRAINED if subject.model_name else TRAINING
        store.transition(subject.id, expected=subject.state, to=state, now=now, error=None,
                         submitted_at=now, trained_at=None)
        return f"{name}: training {subject.task_id} will be checked again"
    store.transition(
        subject.id, expected=subject.state, to=UPLOADED, now=now, error=None, task_id=None,
        task_status=None, progress=None, eta=None, submitted_at=None, trained_at=None,
    )
    return f"{name}: will be trained again on the next run (a new, paid training)"


def cancel_subject(store: StateStore, job: str, name: str, *, now: float) -> str:
    """Stop all further work on a subject. The service has no cancel call: a training
    already submitted goes on (and is billed) there; the pipeline just stops following it."""
    subject = _current(store, job, name)
    if subject.state in SETTLED_STATES:
        raise StateConflict(f"{name} is already {subject.state}")
    store.transition(
        subject.id, expected=subject.state, to=CANCELED, now=now, error="canceled by the user",
        finished_at=now,
    )
    if subject.task_id:
        return (f"{name}: canceled here; training {subject.task_id} may still run on the "
                "service, which offers no cancel call")
    return f"{name}: canceled before any training was submitted"
