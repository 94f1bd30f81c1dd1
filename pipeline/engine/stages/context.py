"""What every stage is handed: the job, settings, the API client, the store and the clock."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ...api import ApiClient
from ...clock import Clock
from ...config import Settings
from ...errors import StoreError
from ...inputs.dataset import display_name
from ...jobfile.loading import JobConfig, SubjectSettings
from ...store.protocol import StateStore, SubjectId, SubjectRow
from ..concurrency import InFlight
from ..live import LiveMeter, current_meter
from ..outbox import SubjectOutbox
from ..spend_guard import SpendGuard, new_pass_id


@dataclass
class StageContext:
    job: JobConfig
    settings: Settings
    api: ApiClient
    store: StateStore
    clock: Clock
    #: Paid calls that must land even while the pass stops.
    inflight: InFlight = field(default_factory=InFlight)
    #: Set when the pass stops: no new paid call starts after it.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    #: The pass's charges and ceiling (the runner gives one; else a pass of its own).
    spend_guard: SpendGuard | None = None
    #: What this pass did, for its ``pass.finished`` line: ``pictures_saved``,
    #: ``loras_saved``, ``trainings_submitted``.
    counts: Counter[str] = field(default_factory=Counter)
    #: Where uploads count photos and bytes for the live view: the pass's meter, when
    #: someone shows it (:mod:`pipeline.engine.live`).
    meter: LiveMeter | None = field(default_factory=current_meter)
    _subject_settings: dict[SubjectId, SubjectSettings] = field(default_factory=dict)

    @property
    def spend(self) -> SpendGuard:
        """Where the stages get the ledger rows of their paid requests."""
        if self.spend_guard is None:
            self.spend_guard = SpendGuard(self.job, new_pass_id(self.clock.now()))
        return self.spend_guard

    @property
    def job_name(self) -> str:
        return self.job.job.name

    def inbox_dir(self, subject: SubjectRow) -> Path:
        """``inbox/<subject>``, found again when the folder's name is not valid UTF-8.

        The state keeps names as people read them (``caf\\xe9``); reading the subject's
        ``subject.toml`` from that spelling would silently miss its overrides.
        """
        folder = self.job.job.inbox / subject.name
        if folder.is_dir() or "\\" not in subject.name:
            return folder
        try:
            with os.scandir(self.job.job.inbox) as entries:
                for entry in entries:
                    if display_name(entry.name) == subject.name and entry.is_dir():
                        return Path(entry.path)
        except OSError:
            pass
        return folder

    def outbox(self, subject: SubjectRow) -> SubjectOutbox:
        """The subject version's folder of results (see :mod:`pipeline.engine.outbox`)."""
        return SubjectOutbox(self.job.job.outbox / self.job_name, subject.name, subject.version)

    def subject_settings(self, subject: SubjectRow) -> SubjectSettings:
        """The settings of this version of the subject, as they were when it was taken in.

        Intake freezes them with the version (:meth:`SubjectSettings.freeze`), so what the
        job file or the folder's ``subject.toml`` says later, or a folder deleted after
        training, changes nothing for it. A version recorded before settings were frozen is
        resolved from the job file once, as then, and frozen from then on.
        """
        settings = self._subject_settings.get(subject.id)
        if settings is None:
            frozen = subject.frozen or self.store.subject(subject.id).frozen
            settings = self._thaw(subject, frozen) if frozen else self._freeze_late(subject)
            self._subject_settings[subject.id] = settings
        return settings

    def _thaw(self, subject: SubjectRow, frozen: str) -> SubjectSettings:
        try:
            return SubjectSettings.thaw(frozen)
        except ValueError as exc:
            raise StoreError(
                f"{subject.name} (version {subject.version}): {exc}, in the job's state file; "
                "the state was changed by hand or by a newer lora-pipeline: restore it, or "
                "upgrade lora-pipeline"
            ) from exc

    def _freeze_late(self, subject: SubjectRow) -> SubjectSettings:
        settings = self.job.subject_settings(self.inbox_dir(subject)).readable()
        # Bookkeeping, not news about the subject: its updated_at (which the exit code and
        # the report read) stays as it was.
        current = self.store.subject(subject.id)
        self.store.keep_init_images(settings.init_images, now=current.updated_at)
        self.store.update_subject(subject.id, now=current.updated_at, frozen=settings.freeze())
        return settings
