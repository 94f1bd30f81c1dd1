"""What every stage is handed: the job, settings, the API client, the store and the clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..api import ApiClient
from ..clock import Clock
from ..config import Settings
from ..jobs import JobConfig, SubjectSettings
from ..state import StateStore, SubjectRow


@dataclass
class StageContext:
    job: JobConfig
    settings: Settings
    api: ApiClient
    store: StateStore
    clock: Clock
    _subject_settings: dict[str, SubjectSettings] = field(default_factory=dict)

    @property
    def job_name(self) -> str:
        return self.job.job.name

    def inbox_dir(self, subject: SubjectRow) -> Path:
        return self.job.job.inbox / subject.name

    def outbox_dir(self, subject: SubjectRow) -> Path:
        """``outbox/<job>/<subject>``; later versions of a subject get ``<subject>-v<N>``."""
        name = subject.name if subject.version == 1 else f"{subject.name}-v{subject.version}"
        return self.job.job.outbox / self.job_name / name

    def subject_settings(self, subject: SubjectRow) -> SubjectSettings:
        """The job's settings with the subject's ``subject.toml`` applied (read once per run)."""
        if subject.name not in self._subject_settings:
            self._subject_settings[subject.name] = self.job.subject_settings(
                self.inbox_dir(subject)
            )
        return self._subject_settings[subject.name]
