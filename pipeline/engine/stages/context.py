"""What every stage is handed: the job, settings, the API client, the store and the clock."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ...api import ApiClient
from ...clock import Clock
from ...config import Settings
from ...inputs.dataset import display_name
from ...jobfile.loading import JobConfig, SubjectSettings
from ...store.protocol import StateStore, SubjectRow
from ..concurrency import InFlight
from ..outbox import SubjectOutbox


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
    _subject_settings: dict[str, SubjectSettings] = field(default_factory=dict)

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
        """The job's settings with the subject's ``subject.toml`` applied (read once per run)."""
        if subject.name not in self._subject_settings:
            settings = self.job.subject_settings(self.inbox_dir(subject))
            self._subject_settings[subject.name] = _readable(settings)
        return self._subject_settings[subject.name]


def _readable(settings: SubjectSettings) -> SubjectSettings:
    """``settings`` with a folder name that is not valid UTF-8 spelt as people read it.

    Rendered into prompts as it is, its undecodable bytes (lone surrogates in Python) can
    be neither stored, nor written to a sidecar, nor sent as JSON.
    """
    if display_name(settings.subject) == settings.subject:
        return settings
    prompts = [replace(p, text=display_name(p.text)) for p in settings.prompts]
    return replace(settings, subject=display_name(settings.subject), prompts=prompts)
