"""``plan``: what the next pass would pay for, found without paying, sending or recording
anything.

The inbox is read as intake reads it (:func:`~.stages.intake.look_at_inbox`, the photo
gate, :func:`~.stages.intake.take_in_outcome`), the state as the stages would find it, and
no network request is made. For each subject it lists the paid requests the pass (and,
for trainings still running, the passes after it) would send to carry it to the end: a
training for a new or untrained version, one generation request per prompt not yet made
(``image_num`` pictures each, by endpoint), requests sent again after an answer that never
came. Then the job's ceiling is applied to them in order, trainings first, as the pass
would: what it would stop is said, not counted.

    plan = plan_pass(job, store, now=time.time(), cache=cache)   # store opened read-only
    plan.total            # the units the ceiling lets through (a Tally)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..budget import ceiling_refusal
from ..errors import ConfigError
from ..inputs.dataset import DatasetReport
from ..inputs.inbox import SubjectFolder
from ..inputs.photo_cache import MeasureCache
from ..jobfile.loading import JobConfig, SubjectSettings
from ..store import ledger
from ..store.ledger import Tally, sum_tallies
from ..store.protocol import GenerationRow, StateStore, SubjectRow
from ..store.states import (
    COMMITTED_STATES,
    FAILED,
    GEN_PENDING,
    GEN_SUBMITTING,
    GENERATING,
    SUBMITTING,
    TRAINED,
    TRAINING,
    UPLOADED,
    UPLOADING,
    VALIDATED,
)
from .stages.generate import MAX_SUBMISSIONS, MAX_UNCERTAIN_RESENDS
from .stages.intake import (
    CHANGING,
    CONFIG_ERROR,
    NEW,
    _check_all,
    _scan,
    look_at_inbox,
    take_in_outcome,
)

#: States whose subject still needs its training paid for.
_UNTRAINED = (VALIDATED, UPLOADING, UPLOADED, SUBMITTING)


@dataclass(frozen=True)
class PlannedRequest:
    """One paid request the pass would send."""

    subject: str
    version: int
    endpoint: str  # training, txt2img or img2img
    units: int  # 1 training, or the pictures asked for
    kind: str | None = None  # a training's kind
    prompt: str | None = None  # a generation's slug
    #: Sent again after an answer that never came (the service may bill both).
    resend: bool = False
    #: A training whose request was never answered: sent only if the task list lacks it.
    maybe: bool = False

    @property
    def tally(self) -> Tally:
        return Tally.of(self.endpoint, self.kind, self.units)


@dataclass(frozen=True)
class SubjectPlan:
    """What the pass would do for one subject: its version, where it stands now (``new``
    for a version not yet taken in), its paid requests, its refused photos, a note."""

    name: str
    version: int
    state: str
    requests: tuple[PlannedRequest, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()
    note: str | None = None


@dataclass
class PassPlan:
    """Every subject's plan, and what the ceiling would make of it."""

    job: str
    subjects: list[SubjectPlan]
    waiting: list[str]
    spent: Tally  # what the ledger counts already
    queued_requests: int  # people's requests (retry, regenerate...) not yet acted on
    #: The requests the ceiling would stop, each with its message.
    stopped: list[tuple[PlannedRequest, str]] = field(default_factory=list)

    def requests(self) -> list[PlannedRequest]:
        """Every request, in the order the ceiling is asked: trainings first."""
        every = [r for s in self.subjects for r in s.requests]
        return sorted(every, key=lambda r: r.endpoint != ledger.TRAINING)

    @property
    def asked(self) -> Tally:
        return sum_tallies(r.tally for r in self.requests())

    @property
    def total(self) -> Tally:
        """What the pass would pay for: every request the ceiling lets through."""
        stopped = {id(r) for r, _ in self.stopped}
        return sum_tallies(r.tally for r in self.requests() if id(r) not in stopped)


def plan_pass(
    job: JobConfig, store: StateStore, *, now: float, cache: MeasureCache | None = None
) -> PassPlan:
    """What the next pass of ``job`` would pay for; ``store`` is only read."""
    name = job.job.name
    look = look_at_inbox(job, store, _scan(job, now))
    checked = list(_check_all(job, [folder for folder, _ in look.todo], cache))
    plans: dict[str, SubjectPlan] = {}
    replaced: set[int] = set()
    for (folder, latest), result in zip(look.todo, checked, strict=True):
        new = _from_inbox(job, folder, latest, result)
        if new is not None:
            plans[folder.name] = new
            if latest is not None:
                replaced.add(latest.id)
    for folder, latest in look.refused:
        if latest is None or latest.state not in COMMITTED_STATES:
            plans[folder.name] = SubjectPlan(folder.name, _next(latest), "new",
                                             note=f"rejected: {folder.refused}")
            if latest is not None:
                replaced.add(latest.id)
    for row in store.subjects(name):
        if row.id not in replaced and row.name not in plans:
            plans[row.name] = _from_state(job, store, row)
    plan = PassPlan(name, [plans[key] for key in sorted(plans)],
                    [folder.name for folder in look.waiting], store.spent(name),
                    len(store.open_requests(name)))
    plan.stopped = _ceiling(job, plan)
    return plan


def _next(latest: SubjectRow | None) -> int:
    return 1 if latest is None else latest.version + 1


def _from_inbox(
    job: JobConfig, folder: SubjectFolder, latest: SubjectRow | None,
    checked: tuple[SubjectSettings, DatasetReport] | ConfigError | None,
) -> SubjectPlan | None:
    """The plan of a folder intake would check; None when its latest version stands."""
    if checked is None:
        return SubjectPlan(folder.name, _next(latest), "new",
                           note="could not be checked (see the log): looked at again next pass")
    outcome = take_in_outcome(job, latest, checked)
    if outcome == CONFIG_ERROR:
        if latest is not None and latest.state in COMMITTED_STATES:
            return None
        return SubjectPlan(folder.name, _next(latest), "new", note=f"rejected: {checked}")
    if outcome == CHANGING:
        return SubjectPlan(folder.name, _next(latest), "new",
                           note="a photo changed while it was read: looked at again next pass")
    if outcome != NEW or isinstance(checked, ConfigError):
        return None  # the same photos, or held back: the latest version goes on as it is
    settings, report = checked
    refused = tuple((r.name, r.reason) for r in report.rejected_files)
    version = _next(latest)
    if not report.ok:
        return SubjectPlan(folder.name, version, "new", refused=refused,
                           note=f"rejected: {report.error or 'no usable image'}")
    requests = (_training(folder.name, version, settings),
                *_prompts(folder.name, version, settings, ()))
    return SubjectPlan(folder.name, version, "new", requests, refused)


def _from_state(job: JobConfig, store: StateStore, row: SubjectRow) -> SubjectPlan:
    """The plan of a version already taken in, from where it stands."""
    try:
        settings = _settings(job, row)
    except (ConfigError, ValueError) as exc:
        return SubjectPlan(row.name, row.version, row.state,
                           note=f"its settings cannot be read: {exc}")
    retrain = (row.state == FAILED and row.task_status == "FAILED"
               and row.attempts <= job.job.max_training_retries)
    if row.state not in (*_UNTRAINED, TRAINING, TRAINED, GENERATING) and not retrain:
        return SubjectPlan(row.name, row.version, row.state)
    requests: list[PlannedRequest] = []
    if row.state in _UNTRAINED or retrain:
        requests.append(_training(row.name, row.version, settings,
                                  maybe=row.state == SUBMITTING))
    generations = store.generations(row.id) if not retrain else []
    requests += _prompts(row.name, row.version, settings, generations)
    refused = (tuple((r.name, r.reason) for r in store.rejections(row.id))
               if row.state in _UNTRAINED else ())
    note = "its training runs on the service" if row.state == TRAINING else None
    return SubjectPlan(row.name, row.version, row.state, tuple(requests), refused, note)


def _settings(job: JobConfig, row: SubjectRow) -> SubjectSettings:
    """The version's frozen settings, as the stages read them; from the job file for a
    version older than frozen settings."""
    if row.frozen:
        return SubjectSettings.thaw(row.frozen)
    return job.subject_settings(job.job.inbox / row.name).readable()


def _training(
    name: str, version: int, settings: SubjectSettings, *, maybe: bool = False
) -> PlannedRequest:
    return PlannedRequest(name, version, ledger.TRAINING, 1, kind=settings.training.kind,
                          maybe=maybe)


def _prompts(
    name: str, version: int, settings: SubjectSettings, generations: Sequence[GenerationRow]
) -> list[PlannedRequest]:
    """A request per prompt not yet made: the settings' prompts with no generation yet,
    generations ``pending`` (unless given up on) or ``submitting`` (sent again, while
    re-sends are left)."""
    images = settings.generation.image_num
    made = {g.prompt_index for g in generations}
    requests = [PlannedRequest(name, version, "img2img" if p.img2img else "txt2img", images,
                               prompt=p.slug)
                for p in settings.prompts if p.index not in made]
    for g in generations:
        pending = g.state == GEN_PENDING and g.submissions < MAX_SUBMISSIONS
        resent = g.state == GEN_SUBMITTING and g.uncertain < MAX_UNCERTAIN_RESENDS
        if pending or resent:
            requests.append(PlannedRequest(name, version, g.endpoint, images, prompt=g.slug,
                                           resend=resent))
    return sorted(requests, key=lambda r: r.prompt or "")


def _ceiling(job: JobConfig, plan: PassPlan) -> list[tuple[PlannedRequest, str]]:
    """The requests the job's ceiling would stop, each with why, asking it of each in turn
    as the pass would; a subject whose training is stopped sends no generation either."""
    if job.max_spend is None:
        return []
    job_spent, pass_spent = plan.spent, Tally()
    stopped: list[tuple[PlannedRequest, str]] = []
    untrained: set[tuple[str, int]] = set()
    for request in plan.requests():
        key = (request.subject, request.version)
        if key in untrained:
            stopped.append((request, "waits for its training, which the ceiling stops"))
            continue
        refusal = ceiling_refusal(job.max_spend, job.prices, job_spent, pass_spent,
                                  request.tally, job_file=job.path)
        if refusal is not None:
            stopped.append((request, refusal))
            if request.endpoint == ledger.TRAINING:
                untrained.add(key)
            continue
        job_spent, pass_spent = job_spent + request.tally, pass_spent + request.tally
    return stopped
