"""Fixtures of the security suite: a hostile stand-in in front of the emulator, a workspace
whose surroundings are watched, and one pass of the pipeline against it."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from pipeline.cli.samples import create_samples
from pipeline.emulator import EmulatorHandle
from pipeline.engine.runner import Runner, RunResult
from pipeline.jobfile.loading import JobConfig, load_job
from pipeline.logs import configure_logging
from pipeline.store.sqlite import SqliteStore
from tests.conftest import fast_settings, write_job

from .hostile import Hostile, serve_hostile


@pytest.fixture
async def hostile(emulator: EmulatorHandle) -> AsyncIterator[Hostile]:
    async with serve_hostile(emulator) as server:
        yield server


@dataclass
class Workspace:
    """``root/ws`` holds the job, its inbox, outbox and state; everything else under
    ``root`` is watched: a pass must not create a file there."""

    root: Path
    job: JobConfig
    logs: io.StringIO

    @property
    def ws(self) -> Path:
        return self.root / "ws"

    @property
    def outbox(self) -> Path:
        return self.ws / "outbox" / "test"

    def store(self) -> SqliteStore:
        return SqliteStore(self.ws / "state" / "state.db")

    def files_outside(self) -> list[str]:
        """Files a run wrote anywhere but the outbox and the state folder."""
        allowed = (self.ws / "outbox", self.ws / "state", self.ws / "inbox")
        return sorted(
            str(p.relative_to(self.root)) for p in self.root.rglob("*")
            if (p.is_file() or p.is_symlink()) and p.name != "test.toml"
            and not any(p.is_relative_to(a) for a in allowed)
        )

    def written(self) -> bytes:
        """Every byte the pass left in files and logs, to search for secrets."""
        files = b"".join(p.read_bytes() for p in self.ws.rglob("*") if p.is_file())
        return files + self.logs.getvalue().encode()

    async def run(self, base_url: str, *, max_wait: float = 15, **settings: Any) -> RunResult:
        config = fast_settings(base_url, self.ws / "state", **settings)
        configure_logging(config.model_copy(update={"log_format": "json"}), stream=self.logs)
        try:
            return await Runner(self.job, config).run_once(max_wait=max_wait)
        finally:
            structlog.reset_defaults()


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    job_file = write_job(tmp_path / "ws", prompts=1)
    create_samples(tmp_path / "ws" / "inbox", count=1, images_per_subject=2, include_bad=False)
    return Workspace(tmp_path, load_job(job_file), io.StringIO())
