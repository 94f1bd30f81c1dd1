"""What a pass may spend: the ledger rows (:class:`~pipeline.store.ledger.Charge`) the
stages write with each intent to send a paid request, each carrying the job's ceiling.

The stages ask for a charge and hand it to the store with the state change that records
the intent; the store asks the ceiling in that same transaction (see
:mod:`pipeline.store.ledger`), so the check cannot be raced. A refusal is remembered here:
the runner exits with :data:`~pipeline.views.summary.EXIT_SPEND_CEILING`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from ..budget import ceiling_refusal
from ..jobfile.loading import JobConfig
from ..store.ledger import TRAINING, Charge, Tally
from ..store.protocol import GenerationRow, SubjectRow

log = structlog.get_logger(__name__)


def new_pass_id(now: float) -> str:
    """A pass's id in the ledger: its start (readable) and a random part (unique)."""
    return f"{int(now)}-{uuid.uuid4().hex[:8]}"


@dataclass
class SpendGuard:
    """The charges of one pass of ``job``, and the refusals of its ceiling."""

    job: JobConfig
    pass_id: str
    #: The ceiling's refusals in this pass, in order (each the subject's message).
    refusals: list[str] = field(default_factory=list)

    def training(self, subject: SubjectRow, kind: str, *, resend: bool = False) -> Charge:
        """The charge of one training of ``subject``; a ``resend`` voids the open one (its
        name was not in the task list: the service made nothing of it)."""
        return Charge(**self._about(subject), endpoint=TRAINING, units=1, kind=kind,
                      resend=resend, void_open=resend)

    def images(
        self, subject: SubjectRow, generation: GenerationRow, count: int, *, resend: bool
    ) -> Charge:
        """The charge of one generation request for ``count`` pictures."""
        return Charge(**self._about(subject), endpoint=generation.endpoint, units=count,
                      generation_id=generation.id, resend=resend)

    def _about(self, subject: SubjectRow) -> dict[str, Any]:
        """What every charge of ``subject`` in this pass says, its ceiling included."""
        return {
            "job": self.job.job.name, "subject_id": subject.id, "subject": subject.name,
            "version": subject.version, "pass_id": self.pass_id,
            "check": self._check if self.job.max_spend is not None else None,
        }

    def _check(self, job_spent: Tally, pass_spent: Tally, request: Tally) -> str | None:
        refusal = ceiling_refusal(self.job.max_spend, self.job.prices, job_spent, pass_spent,
                                  request, job_file=self.job.path)
        if refusal is not None:
            self.refusals.append(refusal)
            log.warning("spend.ceiling", refusal=refusal)
        return refusal

    @property
    def stopped(self) -> bool:
        """Whether the ceiling kept a paid request from being sent in this pass."""
        return bool(self.refusals)
