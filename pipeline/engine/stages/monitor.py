"""Monitor: one poller for every in-flight training.

Each cycle reads the task list (newest first, stopping once every watched task was seen),
so a cycle costs O(1) requests however many trainings are in flight; a task missing from
the list is asked for by id. A few TRAINING tasks per cycle also get a detail call, for
their progress and ETA. The interval starts at ``poll_interval_min`` and grows towards
``poll_interval_max`` while nothing changes.

A training ends ``trained`` (SUCCESS and its model SERVING), ``failed`` (FAILED, a
deadline passed, or the model stuck DEPLOYING) or ``canceled``.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

import structlog

from ...api.models import TrainingKind, TrainingStatus
from ...errors import ApiError, BadCredentials, NotFound, PipelineError, StateConflict
from ...store.protocol import SubjectRow
from ...store.states import CANCELED, FAILED, TRAINED, TRAINING
from .context import StageContext

log = structlog.get_logger(__name__)

#: Detail calls per cycle for progress and ETA (bounded: the cycle stays O(1)).
PROGRESS_CALLS_PER_CYCLE = 4
#: While nothing changes the poller slows down by this much a cycle (not a retry backoff).
SLOWDOWN_FACTOR = 1.5
#: How an unreadable status is noted on the subject (cleared once it reads again).
STATUS_UNREADABLE = "the training's status cannot be read"


@dataclass
class _Watch:
    subject: SubjectRow
    kind: TrainingKind
    done: asyncio.Future[SubjectRow]


class TrainingMonitor:
    """Subjects in ``training`` await :meth:`wait`; :meth:`run` polls for all of them."""

    def __init__(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._watches: dict[str, _Watch] = {}
        self._added = asyncio.Event()
        self._round_robin = itertools.count()
        self.cycles = 0

    async def wait(self, subject: SubjectRow) -> SubjectRow:
        """Return the subject once its training settled (trained, failed or canceled)."""
        assert subject.task_id is not None
        other = self._watches.get(subject.task_id)
        if other is not None and other.subject.id != subject.id:
            raise PipelineError(
                f"the service gave {subject.name} the task id {subject.task_id} it had already "
                f"given {other.subject.name}: one of them is not followed; ask the service"
            )
        kind = self._ctx.subject_settings(subject).training.kind
        future: asyncio.Future[SubjectRow] = asyncio.get_running_loop().create_future()
        self._watches[subject.task_id] = _Watch(subject, kind, future)
        self._added.set()
        try:
            return await future
        finally:
            self._watches.pop(subject.task_id, None)

    async def run(self) -> None:
        """Poll until cancelled; idle (no requests) while nothing is watched."""
        settings = self._ctx.settings
        interval = settings.poll_interval_min
        while True:
            if not self._watches:
                self._added.clear()
                await self._added.wait()
                interval = settings.poll_interval_min
            try:
                changed = await self.poll_once()
            except BadCredentials as exc:
                self._fail_all(exc)
                raise
            except Exception:  # the one poller must outlive any bad cycle
                log.exception("monitor.cycle_failed", watched=len(self._watches))
                changed = False
            interval = (
                settings.poll_interval_min
                if changed
                else min(interval * SLOWDOWN_FACTOR, settings.poll_interval_max)
            )
            await self._ctx.clock.sleep(interval)

    async def poll_once(self) -> bool:
        """One cycle; True when any watched training changed."""
        self.cycles += 1
        # Watches added while the list is read wait for the next cycle: asking for each by
        # id would make a cycle cost one request per training submitted meanwhile.
        watched = list(self._watches.items())
        try:
            statuses = await self._list_statuses()
        except BadCredentials:
            raise
        except ApiError as exc:  # the list is a shortcut: ask for each training instead
            log.warning("monitor.list_failed", error=str(exc))
            statuses = {}
        changed = False
        for task_id, watch in watched:
            if task_id not in self._watches:
                continue  # settled or given up while the list was read
            status = statuses.get(task_id)
            if status is None:
                status = await self._status(watch)
            try:
                if status is None:  # unreadable: only its deadline can settle it
                    last = watch.subject.task_status or "UNKNOWN"
                    changed |= self._apply(watch, TrainingStatus(task_status=last), readable=False)
                else:
                    changed |= self._apply(watch, status)
            except Exception as exc:  # one odd status must not drop the others' news
                log.exception("monitor.apply_failed", subject=watch.subject.name)
                self._note(watch, f"{STATUS_UNREADABLE}: {type(exc).__name__}")
        return changed

    async def _list_statuses(self) -> dict[str, TrainingStatus]:
        wanted = set(self._watches)
        found: dict[str, TrainingStatus] = {}
        async for task in self._ctx.api.iter_training_tasks():
            if task.task_id in wanted:
                found[task.task_id] = task.as_status()
                if len(found) == len(wanted):
                    break
        await self._add_progress(found)
        return found

    async def _add_progress(self, found: dict[str, TrainingStatus]) -> None:
        training = sorted(t for t, s in found.items() if s.task_status == "TRAINING")
        if not training:
            return
        start = next(self._round_robin) * PROGRESS_CALLS_PER_CYCLE
        for offset in range(min(PROGRESS_CALLS_PER_CYCLE, len(training))):
            task_id = training[(start + offset) % len(training)]
            detail = await self._status(self._watches[task_id])
            if detail is not None:
                found[task_id] = detail

    async def _status(self, watch: _Watch) -> TrainingStatus | None:
        assert watch.subject.task_id is not None
        try:
            return await self._ctx.api.training_status(watch.kind, watch.subject.task_id)
        except NotFound:
            # Unknown, never failed: a FAILED would be trained again (and paid again). It is
            # asked for again each cycle; past the training deadline it is reported.
            self._note(watch, f"{STATUS_UNREADABLE}: the service does not know this training "
                              "task (404)")
            return None
        except BadCredentials:
            raise
        except ApiError as exc:
            log.warning("monitor.status_failed", subject=watch.subject.name, error=str(exc))
            self._note(watch, f"{STATUS_UNREADABLE}: {exc}")
            return None

    def _note(self, watch: _Watch, note: str) -> None:
        """Say on the subject why its training is not followed right now."""
        if watch.subject.error != note:
            watch.subject = self._ctx.store.update_subject(
                watch.subject.id, now=self._ctx.clock.now(), error=note
            )

    def _apply(self, watch: _Watch, status: TrainingStatus, *, readable: bool = True) -> bool:
        ctx, subject = self._ctx, watch.subject
        now = ctx.clock.now()
        previous = (subject.task_status, subject.progress)
        updates: dict[str, Any] = {"task_status": status.task_status}
        if readable and (subject.error or "").startswith(STATUS_UNREADABLE):
            updates["error"] = None  # readable again
        if status.extra.progress_percent is not None:
            updates["progress"] = status.extra.progress_percent
            updates["eta"] = status.extra.eta_relative
        if status.task_status == "SUCCESS":
            updates["progress"], updates["eta"] = 100, 0
            if subject.trained_at is None:
                updates["trained_at"] = now
        settled = self._settle(subject, status, now)
        if settled is None:
            subject = ctx.store.update_subject(subject.id, now=now, **updates)
        else:
            to = str(settled.pop("state"))
            try:
                subject = ctx.store.transition(
                    subject.id, expected=TRAINING, to=to, now=now, **updates, **settled
                )
            except StateConflict:  # a person canceled it meanwhile: theirs is the last word
                subject = ctx.store.subject(subject.id)
        watch.subject = subject
        if settled is not None:
            log.info("monitor.settled", subject=subject.name, state=subject.state,
                     error=subject.error)
            if not watch.done.done():
                watch.done.set_result(subject)
            return True
        return previous != (subject.task_status, subject.progress)

    def _settle(
        self, subject: SubjectRow, status: TrainingStatus, now: float
    ) -> dict[str, Any] | None:
        settings = self._ctx.settings
        if status.serving_model:
            return {"state": TRAINED, "model_name": status.serving_model, "serving_at": now}
        if status.task_status in ("FAILED", "CANCELED"):
            reason = status.reason or f"the service reported the training {status.task_status}"
            return {"state": FAILED if status.task_status == "FAILED" else CANCELED,
                    "error": reason, "finished_at": now}
        if status.task_status == "SUCCESS":
            deploying_since = subject.trained_at or now
            if now - deploying_since > settings.deploy_deadline:
                return {"state": FAILED, "finished_at": now, "error": (
                    f"trained, but the model was still DEPLOYING after "
                    f"{settings.deploy_deadline:.0f} s: ask the service, then `retry`"
                )}
            return None
        submitted = subject.submitted_at or now
        if now - submitted > settings.training_deadline:
            return {"state": FAILED, "finished_at": now, "error": (
                f"no result {settings.training_deadline:.0f} s after submission "
                f"(still {status.task_status}): the training may still finish; `retry` checks again"
            )}
        return None

    def _fail_all(self, exc: BaseException) -> None:
        for watch in self._watches.values():
            if not watch.done.done():
                watch.done.set_exception(exc)
