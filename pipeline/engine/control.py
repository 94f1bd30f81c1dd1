"""What a person can ask of one subject: ``cancel``, ``retry`` and ``regenerate``.

A request is written to the store first (:meth:`StateStore.add_request`). A pass that is
running (``run`` or ``watch``) looks for requests every few seconds and acts on them
(:func:`serve_requests`); with no pass running, the command acts on it at once itself,
holding the job's lock. Either way the same functions below decide, through the state
machine's compare-and-set, so a request never races the engine into paying twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError, StateConflict
from ..jobfile.loading import JobConfig, RenderedPrompt
from ..jobfile.templates import prompt_slug
from ..store.protocol import RequestRow, StateStore, SubjectRow
from ..store.states import (
    CANCELED,
    DONE,
    FAILED,
    GEN_FAILED,
    GEN_PENDING,
    GENERATING,
    REJECTED,
    SETTLED_STATES,
    SUBMITTING,
    TRAINED,
    TRAINING,
    UPLOADED,
)
from .stages.generate import init_uses

ACTIONS = ("cancel", "retry", "regenerate")


def request_args(action: str, *, prompts: Sequence[str] = (), new: bool = False) -> dict[str, Any]:
    """The arguments a request carries (``regenerate`` only: chosen prompts, new ones)."""
    if action != "regenerate":
        return {}
    return {"prompts": list(prompts), "new": new}


def act(store: StateStore, job: JobConfig, request: RequestRow, *, now: float) -> str:
    """Carry out one request; the sentence that says what happened. A request that cannot
    be carried out (a subject already settled, unknown) raises :class:`StateConflict`."""
    if request.action == "cancel":
        return cancel_subject(store, job.job.name, request.subject, now=now)
    if request.action == "retry":
        return retry_subject(store, job.job.name, request.subject, now=now)
    if request.action == "regenerate":
        args = request.arguments
        return regenerate_subject(store, job, request.subject, prompts=args.get("prompts", []),
                                  new=bool(args.get("new")), now=now)
    raise StateConflict(f"{request.subject}: unknown request {request.action!r}")


def _current(store: StateStore, job: str, name: str) -> SubjectRow:
    subject = store.latest(job, name)
    if subject is None:
        raise StateConflict(f"job {job!r} has no subject {name!r}: `status` lists them")
    return subject


def retry_subject(store: StateStore, job: str, name: str, *, now: float) -> str:
    """Make a failed, canceled or partly failed subject go again.

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
    return f"{name}: will be trained again (a new, paid training)"


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
    if subject.state == SUBMITTING:
        return (f"{name}: canceled here; its training request had no clear answer, so the "
                f"service may hold training {subject.training_name} (a `retry` looks for it "
                "before paying again)")
    return f"{name}: canceled before any training was submitted"


def regenerate_subject(
    store: StateStore, job: JobConfig, name: str, *, prompts: Sequence[str], new: bool,
    now: float,
) -> str:
    """Generate again the chosen prompts of a finished subject (by slug or number: each is
    paid again), and/or the job's prompts it has never had (``new``)."""
    subject = _current(store, job.job.name, name)
    if subject.state != DONE:
        raise StateConflict(f"{name} is {subject.state}: only a done subject is regenerated")
    generations = store.generations(subject.id)
    chosen = [g for g in generations if g.slug in prompts or str(g.prompt_index) in prompts]
    known = {g.slug for g in chosen} | {str(g.prompt_index) for g in chosen}
    unknown = sorted(set(prompts) - known)
    if unknown:
        shown = ", ".join(g.slug for g in generations)
        raise StateConflict(f"{name} has no prompt {', '.join(unknown)}: its prompts are {shown}")
    added, init_images = _new_prompts(job, subject, generations) if new else ([], {})
    if not chosen and not added:
        raise StateConflict(f"{name}: nothing to generate (no prompt chosen, none new in the job)")
    for generation in chosen:
        store.transition_generation(
            generation.id, expected=generation.state, to=GEN_PENDING, now=now, task_id=None,
            submissions=0, uncertain=0, error=None,
        )
    next_index = max((g.prompt_index for g in generations), default=0) + 1
    numbered = [dataclasses.replace(prompt, index=index, slug=prompt_slug(index, prompt.template))
                for index, prompt in enumerate(added, start=next_index)]
    store.keep_init_images(init_images, now=now)
    store.ensure_generations(subject.id, [(p.index, p.slug, p.text) for p in numbered], now=now,
                             img2img=init_uses(numbered))
    store.transition(subject.id, expected=DONE, to=GENERATING, now=now, error=None)
    return f"{name}: {len(chosen) + len(added)} prompt(s) will be generated ({len(added)} new)"


def _new_prompts(
    job: JobConfig, subject: SubjectRow, generations: Sequence[Any]
) -> tuple[list[RenderedPrompt], Mapping[str, bytes]]:
    """The job's prompts, rendered for the subject as it now stands (its ``subject.toml``
    applied, if its folder is still there), that it never had; and the bytes of their init
    images, read now. A prompt it had from another init image or strength is new."""
    try:
        settings = job.subject_settings(job.job.inbox / subject.name)
    except ConfigError as exc:
        raise StateConflict(f"{subject.name}: its prompts cannot be read now: {exc}") from exc
    had = {(g.prompt, g.init_sha256, g.strength) for g in generations}
    added = [p for p in settings.prompts if (p.text, p.init_sha256, p.strength) not in had]
    kept = {p.init_sha256 for p in added if p.init_sha256 is not None}
    return added, {sha: data for sha, data in settings.init_images.items() if sha in kept}

