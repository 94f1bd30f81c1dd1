"""What happened, per subject: the data behind ``status``, the end-of-run summary, the
exit code, and (later) the HTML report. Read from the state store only."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import (
    BadCredentials,
    ConfigError,
    LockHeld,
    PipelineError,
    StateConflict,
    StateUnreachable,
    StoreError,
)
from ..store.protocol import StateStore, SubjectRow
from ..store.states import CANCELED, DONE, FAILED, GEN_DONE, REJECTED

#: States a subject stays in until someone acts (``retry``, ``regenerate``, a new version).
SETTLED = frozenset({DONE, FAILED, CANCELED, REJECTED})
#: Milestones of a subject, in order, as named in ``SubjectSummary.timings``.
MILESTONES = ("discovered", "submitted", "trained", "serving", "finished")

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REJECTED = 3
EXIT_FAILED = 4
EXIT_BAD_CREDENTIALS = 5
EXIT_LOCK_HELD = 6
#: The spend ceiling (``max_spend``) kept a paid request from being sent in this pass.
EXIT_SPEND_CEILING = 7
#: Not one API request of this pass was answered: connection refused or reset, timeouts,
#: or only server errors (5xx, 429) however often they were tried.
EXIT_UNREACHABLE = 8
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


def exit_code_for_error(exc: BaseException) -> int:
    """The exit code of a command (a pass) that ended by raising ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_SIGINT
    if isinstance(exc, StateUnreachable):  # as the service's network: try again later
        return EXIT_UNREACHABLE
    if isinstance(exc, ConfigError | StateConflict | StoreError):
        return EXIT_USAGE
    if isinstance(exc, LockHeld):
        return EXIT_LOCK_HELD
    if isinstance(exc, BadCredentials):
        return EXIT_BAD_CREDENTIALS
    if isinstance(exc, PipelineError):
        return EXIT_FAILED
    return 1  # a bug: Python's own code for an uncaught exception


@dataclass(frozen=True)
class SubjectSummary:
    name: str
    version: int
    state: str
    images: int
    rejected_files: list[dict[str, str]]
    warnings: list[str]
    training_name: str | None
    task_id: str | None
    task_status: str | None
    progress: int | None
    eta: int | None
    model_name: str | None
    lora_path: str | None
    prompts_done: int
    prompts_total: int
    outputs: list[str]
    error: str | None
    timings: dict[str, float | None] = field(default_factory=dict)
    updated_at: float = 0.0
    photos: list[dict[str, Any]] = field(default_factory=list)
    good_face_photos: int | None = None
    #: A small JPEG of each refused photo, by file name, for the HTML report (not in JSON).
    thumbnails: dict[str, bytes] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["thumbnails"]
        return data

    @property
    def settled(self) -> bool:
        """Done, failed, canceled or rejected: nothing goes on until someone acts."""
        return self.state in SETTLED

    @property
    def photos_found(self) -> int:
        """The photos of the version's folder: those taken for training and those refused
        (a folder refused as a whole has every photo among the refused)."""
        return self.images + len(self.rejected_files)

    @property
    def live_progress(self) -> tuple[int | None, int | None]:
        """Training progress and ETA while they mean something: (None, None) once the
        subject has settled, whatever the service said last."""
        return (None, None) if self.settled else (self.progress, self.eta)

    @property
    def retryable(self) -> bool:
        """Whether ``retry`` has something to do: a failed training or deadline, or a
        finished subject with failed prompts."""
        return self.state == FAILED or (self.state == DONE and self.error is not None)


def summarize_subject(store: StateStore, row: SubjectRow) -> SubjectSummary:
    generations = store.generations(row.id)
    images = store.images(row.id)
    rejections = store.rejections(row.id)
    counted = [image.faces for image in images if image.faces is not None]
    return SubjectSummary(
        name=row.name,
        version=row.version,
        state=row.state,
        images=row.image_count,
        rejected_files=[{"file": r.name, "reason": r.reason} for r in rejections],
        warnings=row.warning_list,
        training_name=row.training_name,
        task_id=row.task_id,
        task_status=row.task_status,
        progress=row.progress,
        eta=row.eta,
        model_name=row.model_name,
        lora_path=row.lora_path,
        prompts_done=sum(1 for g in generations if g.state == GEN_DONE),
        prompts_total=len(generations),
        outputs=[o.path for o in store.outputs(row.id)],
        error=row.error,
        timings={
            "discovered": row.created_at,
            "submitted": row.submitted_at,
            "trained": row.trained_at,
            "serving": row.serving_at,
            "finished": row.finished_at,
        },
        updated_at=row.updated_at,
        photos=[{"file": image.name, "faces": image.faces, "sharpness": image.sharpness,
                 "changes": image.change_list} for image in images],
        good_face_photos=sum(1 for faces in counted if faces == 1) if counted else None,
        thumbnails={r.name: r.thumbnail for r in rejections if r.thumbnail},
    )


def summarize(store: StateStore, job: str) -> list[SubjectSummary]:
    return [summarize_subject(store, row) for row in store.subjects(job)]


class Summaries:
    """:func:`summarize`, again and again at little cost, for a view redrawn every moment.

    A subject that has settled (done, failed, canceled or rejected) is read again only
    when its row changes (its state or ``updated_at``): nothing changes its prompts or
    pictures without changing its state too. So each call costs one query, plus three per
    subject still on its way.
    """

    def __init__(self, job: str) -> None:
        self._job = job
        self._settled: dict[int, tuple[tuple[float, str], SubjectSummary]] = {}

    def __call__(self, store: StateStore) -> list[SubjectSummary]:
        summaries = []
        settled: dict[int, tuple[tuple[float, str], SubjectSummary]] = {}
        for row in store.subjects(self._job):
            key = (row.updated_at, row.state)
            kept = self._settled.get(row.id)
            summary = kept[1] if kept is not None and kept[0] == key else None
            if summary is None:
                summary = summarize_subject(store, row)
            if row.state in SETTLED:
                settled[row.id] = (key, summary)
            summaries.append(summary)
        self._settled = settled
        return summaries


def exit_code_for(
    subjects: list[SubjectSummary], *, since: float, ceiling_reached: bool = False,
    unreachable: bool = False,
) -> int:
    """The exit code of a pass that started at ``since``: what changed in it decides.

    The spend ceiling stopping a paid request outranks everything (nothing more is paid
    until a person raises it, or the next pass for a per-pass ceiling); then a service
    that answered none of the pass's requests; then failed trainings or prompts; then
    input refused in this pass: a version taken in during it that was rejected whole or
    had files refused (as ``check`` says 3 for a folder with a refused file); anything
    done or still in flight is a success (the next pass goes on).
    """
    if ceiling_reached:
        return EXIT_SPEND_CEILING
    if unreachable:
        return EXIT_UNREACHABLE
    recent = [s for s in subjects if s.updated_at >= since]
    if any(s.state in (FAILED, CANCELED) or (s.state == DONE and s.error) for s in recent):
        return EXIT_FAILED
    if any(s.state == REJECTED or (s.rejected_files and _taken_in_since(s, since))
           for s in recent):
        return EXIT_REJECTED
    return EXIT_OK


def _taken_in_since(subject: SubjectSummary, since: float) -> bool:
    """The version was taken in during the pass (not one refused files of an older pass,
    that is trained or generated in this one)."""
    discovered = subject.timings.get("discovered")
    return discovered is not None and discovered >= since
