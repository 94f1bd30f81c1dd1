"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core
from pydantic import SecretStr

from pipeline.config import Settings

TEST_KEY = "sk-test-0123456789abcdef"


class RecordingClock:
    """A clock whose sleeps return at once and are remembered."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._now += seconds


@pytest.fixture
def clock() -> RecordingClock:
    return RecordingClock()


@pytest.fixture
def settings(tmp_path: object) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        api_key=SecretStr(TEST_KEY),
        base_url="http://api.test",
        retry_max_attempts=4,
        retry_base_delay=0.01,
        retry_max_delay=0.05,
    )


class _CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without aiohttp 3.14's ``stream_writer``
    (pnuckowski/aioresponses#289); supply a stand-in until a fixed release exists."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """aioresponses, patched to work with the installed aiohttp."""
    monkeypatch.setattr(aioresponses_core, "ClientResponse", _CompatResponse)
    with aioresponses() as mock:
        yield mock
