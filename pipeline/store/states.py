"""The state machines of subjects and generations: the one place that says which changes
are allowed, why, and which part of the engine owns each state.

    validated -> uploading -> uploaded -> submitting -> training -> trained -> generating -> done
        (any of these) -> canceled                 training -> failed
    rejected: a version intake refused; a later version replaces it

A change of state happens only through the store's compare-and-set
(:meth:`~pipeline.store.protocol.StateStore.transition`), which refuses a change this table
does not list and a subject that is no longer in the state the caller saw. Each edge says why
it exists (:class:`Why`), which lets a test prove the promise about money: the only way back
into a paid state is an edge whose reason is a person's request or the service's own
certain failure, never a crash, a stop or an uncertain answer.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from ..errors import StateConflict

# --- subjects ----------------------------------------------------------------------------

REJECTED, VALIDATED, UPLOADING, UPLOADED = "rejected", "validated", "uploading", "uploaded"
SUBMITTING, TRAINING, TRAINED, GENERATING, DONE = (
    "submitting", "training", "trained", "generating", "done"
)
FAILED, CANCELED = "failed", "canceled"
SUBJECT_STATES: Final = (
    REJECTED, VALIDATED, UPLOADING, UPLOADED, SUBMITTING, TRAINING, TRAINED, GENERATING, DONE,
    FAILED, CANCELED,
)
#: A subject in one of these states has cost (or may have cost) a training.
COMMITTED_STATES: Final = frozenset({SUBMITTING, TRAINING, TRAINED, GENERATING, DONE})
#: Nothing more happens to a subject in these states until a person acts.
SETTLED_STATES: Final = frozenset({REJECTED, DONE, FAILED, CANCELED})
#: States a subject leaves without a person's help.
ACTIVE_STATES: Final = (VALIDATED, UPLOADING, UPLOADED, SUBMITTING, TRAINING, TRAINED, GENERATING)

# --- generations (one prompt of one subject version) ---------------------------------------

GEN_PENDING, GEN_SUBMITTING, GEN_SUBMITTED, GEN_DONE, GEN_FAILED = (
    "pending", "submitting", "submitted", "done", "failed"
)
GENERATION_STATES: Final = (GEN_PENDING, GEN_SUBMITTING, GEN_SUBMITTED, GEN_DONE, GEN_FAILED)


class Why(Enum):
    """Why an edge exists; the property tests reason over these."""

    PROGRESS = "the owning stage finished its step"
    RECONCILED = "the service already holds the paid task (found by name)"
    CERTAIN_REFUSAL = "the service certainly did not create the task"
    SERVICE_VERDICT = "the service reported the task FAILED or CANCELED, or a deadline passed"
    RESULT_LOST = "a finished task's results can no longer be fetched"
    GAVE_UP = "refused by the service, or the pipeline stopped trying: a person may ask again"
    PERSON = "a person asked (retry, cancel, regenerate)"


#: (from, to) -> why. Owners: intake writes new versions; upload, train, the monitor,
#: generate and collect own the states they leave; people act through control requests.
SUBJECT_EDGES: Final[dict[tuple[str, str], Why]] = {
    (VALIDATED, UPLOADING): Why.PROGRESS,
    (UPLOADING, UPLOADED): Why.PROGRESS,
    (UPLOADED, SUBMITTING): Why.PROGRESS,  # intent written before the paid POST
    (UPLOADED, TRAINING): Why.RECONCILED,  # a lost state file: the training exists
    (SUBMITTING, TRAINING): Why.PROGRESS,
    (SUBMITTING, FAILED): Why.CERTAIN_REFUSAL,
    (TRAINING, TRAINED): Why.PROGRESS,
    (TRAINING, FAILED): Why.SERVICE_VERDICT,
    (TRAINING, CANCELED): Why.SERVICE_VERDICT,
    (TRAINED, GENERATING): Why.PROGRESS,
    (GENERATING, DONE): Why.PROGRESS,
    # max_training_retries: the service said FAILED, so a new attempt (a new name) is paid.
    (FAILED, UPLOADED): Why.SERVICE_VERDICT,
    # A person's requests (a training canceled on the service arrives by SERVICE_VERDICT).
    **{(state, CANCELED): Why.PERSON for state in ACTIVE_STATES if state != TRAINING},
    (FAILED, TRAINING): Why.PERSON,  # check a training that ran past a deadline again
    (FAILED, TRAINED): Why.PERSON,
    (CANCELED, UPLOADED): Why.PERSON,
    (CANCELED, TRAINING): Why.PERSON,
    (CANCELED, TRAINED): Why.PERSON,
    (DONE, GENERATING): Why.PERSON,  # regenerate, or retry the prompts that failed
}

GENERATION_EDGES: Final[dict[tuple[str, str], Why]] = {
    (GEN_PENDING, GEN_SUBMITTING): Why.PROGRESS,  # intent written before the paid POST
    (GEN_SUBMITTING, GEN_SUBMITTED): Why.PROGRESS,
    (GEN_SUBMITTING, GEN_PENDING): Why.CERTAIN_REFUSAL,  # a 429: sent again after a pause
    (GEN_SUBMITTING, GEN_FAILED): Why.GAVE_UP,
    (GEN_PENDING, GEN_FAILED): Why.GAVE_UP,
    (GEN_SUBMITTED, GEN_DONE): Why.PROGRESS,
    (GEN_SUBMITTED, GEN_FAILED): Why.SERVICE_VERDICT,
    (GEN_SUBMITTED, GEN_PENDING): Why.RESULT_LOST,
    (GEN_DONE, GEN_PENDING): Why.PERSON,
    (GEN_FAILED, GEN_PENDING): Why.PERSON,
}

#: The states in which a paid create is sent: entering one means paying (or trying to).
PAID_SUBJECT_STATE: Final = SUBMITTING
PAID_GENERATION_STATE: Final = GEN_SUBMITTING


def check_subject(expected: str, to: str) -> Why:
    """Why ``expected -> to`` is allowed, or :class:`StateConflict`."""
    return _check(SUBJECT_EDGES, "subject", expected, to)


def check_generation(expected: str, to: str) -> Why:
    return _check(GENERATION_EDGES, "generation", expected, to)


def _check(edges: dict[tuple[str, str], Why], what: str, expected: str, to: str) -> Why:
    why = edges.get((expected, to))
    if why is None:
        raise StateConflict(f"a {what} cannot go from {expected} to {to}")
    return why
