"""Which subjects this process may drive, and which one-at-a-time jobs it may do.

With the SQLite store one process runs a job (the job's lock sees to that): it is the
:class:`SoleWorker`, which may do everything. With PostgreSQL (``LORA_STATE_URL``) several
workers share the job: a :class:`SharedWorker` drives only the subjects it leases, does
intake and polls trainings only while it holds that role, and renews all of it from a
heartbeat task (:mod:`pipeline.store.coordination`).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Iterable, Sequence

import structlog

from ..clock import Clock
from ..errors import StoreError
from ..store.coordination import INTAKE, Coordination
from ..store.postgres import PostgresStore
from ..store.protocol import SubjectRow

log = structlog.get_logger(__name__)


class SoleWorker:
    """The only process of its job: every subject and every role is its own."""

    shared = False

    def claim(self, rows: Sequence[SubjectRow], states: Iterable[str]) -> list[SubjectRow]:  # noqa: ARG002
        return list(rows)

    def holds(self, subject_id: int) -> bool:  # noqa: ARG002
        return True

    def may_serve(self, subject: SubjectRow | None) -> bool:  # noqa: ARG002
        """Whether a person's request about ``subject`` is for this worker to act on."""
        return True

    def take_role(self, role: str) -> bool:  # noqa: ARG002
        return True

    async def heartbeat(self, on_lost: Callable[[set[int]], None]) -> None:
        """Nothing to renew."""

    def leave(self) -> None:
        """Nothing to give back."""


def new_owner() -> str:
    """A worker's name in the leases: its host and process, and a nonce (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class SharedWorker(SoleWorker):
    """One worker of a job shared through PostgreSQL."""

    shared = True

    def __init__(self, store: PostgresStore, job: str, clock: Clock, *, ttl: float) -> None:
        assert store.owner is not None, "a worker's store names its owner"
        self.owner = store.owner
        self._clock = clock
        self._coordination = Coordination(store, job, store.owner, ttl=ttl)
        self._held: set[int] = set()
        self._roles: set[str] = set()
        self._coordination.join(host=socket.gethostname(), pid=os.getpid(), now=clock.now())
        log.info("worker.joined", owner=self.owner,
                 workers=self._coordination.live_workers(clock.now()))

    def claim(self, rows: Sequence[SubjectRow], states: Iterable[str]) -> list[SubjectRow]:
        """Those of ``rows`` this worker now leases (its fair share of the free ones)."""
        if not rows:
            return []
        ids = self._coordination.claim(states, now=self._clock.now(), only=[r.id for r in rows])
        self._held |= set(ids)
        return [r for r in rows if r.id in ids]

    def holds(self, subject_id: int) -> bool:
        return subject_id in self._held

    def may_serve(self, subject: SubjectRow | None) -> bool:
        """A request is acted on by the subject's lease holder; for a subject no worker
        leases (a settled one), by the worker doing intake."""
        if subject is not None and subject.id in self._held:
            return True
        holder = None if subject is None else self._coordination.holder(
            subject.id, now=self._clock.now())
        return holder is None and INTAKE in self._roles

    def take_role(self, role: str) -> bool:
        taken = self._coordination.take_role(role, now=self._clock.now())
        if taken and role not in self._roles:
            log.info("worker.role_taken", role=role)
        (self._roles.add if taken else self._roles.discard)(role)
        return taken

    def has_role(self, role: str) -> bool:
        return role in self._roles

    async def heartbeat(self, on_lost: Callable[[set[int]], None]) -> None:
        """Renew leases and roles every third of their life, until cancelled; tell
        ``on_lost`` of subjects another worker took meanwhile (this one was too slow). A
        renewal the database fails is tried again every tenth of a lease: one error must
        not let the leases lapse."""
        ttl = self._coordination.ttl
        while True:
            await self._clock.sleep(ttl / 3)
            while True:
                try:
                    still = self._coordination.renew(now=self._clock.now())
                    break
                except StoreError as exc:
                    log.warning("worker.renew_failed", error=str(exc),
                                hint="tried again; the leases lapse if it keeps failing")
                    await self._clock.sleep(ttl / 10)
            lost = self._held - still
            self._held &= still
            if lost:
                log.warning("worker.leases_lost", subjects=len(lost),
                            hint="another worker took them over; their drivers stop here")
                on_lost(lost)

    def leave(self) -> None:
        self._coordination.leave()
        self._held.clear()
        self._roles.clear()
