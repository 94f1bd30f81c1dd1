"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import structlog
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core
from pydantic import SecretStr

from pipeline.config import Settings
from pipeline.emulator import EmulatorConfig, EmulatorHandle, serve_emulator
from tests.postgres import PostgresServer

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


# --- the pipeline against the emulator -----------------------------------------------------

FAST_EMULATOR = dict(
    queue_seconds=0.05, train_seconds=0.15, deploy_seconds=0.05,
    generation_queue_seconds=0.02, generation_seconds=0.05,
)
EMULATOR_KEY = "sk-emulated-key-42"


def fast_settings(base_url: str, state_dir: Path, **overrides: Any) -> Settings:
    """Settings for a pipeline that polls the fast emulator without waiting around."""
    values: dict[str, Any] = dict(
        api_key=SecretStr(EMULATOR_KEY), base_url=base_url, state_dir=state_dir,
        poll_interval_min=0.02, poll_interval_max=0.05, generation_poll_interval=0.02,
        retry_base_delay=0.01, retry_max_delay=0.05, images_per_minute=1000,
        img2img_images_per_minute=1000,
        stop_grace_seconds=0.5,
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def write_job(folder: Path, text: str = "", *, name: str = "test", kind: str = "subject",
              prompts: int = 2, image_num: int = 1, extra: str = "") -> Path:
    """A job file whose inbox and outbox sit next to it."""
    folder.mkdir(parents=True, exist_ok=True)
    prompt_list = ", ".join(f'"{{instance_prompt}}, take {n}"' for n in range(1, prompts + 1))
    job = folder / f"{name}.toml"
    job.write_text(text or f"""
[job]
name = "{name}"
inbox = "inbox"
outbox = "outbox"
settle_seconds = 0
{extra}

[training]
kind = "{kind}"

[generation]
image_num = {image_num}
prompts = [{prompt_list}]

[photos]
faces = "off"  # tests.pictures are sharp and distinct, but no one's face
""", encoding="utf-8")
    (folder / "inbox").mkdir(exist_ok=True)
    return job


@pytest.fixture
def emulator_config(request: pytest.FixtureRequest) -> EmulatorConfig:
    """The fast emulator; ``indirect`` parametrization passes overrides (faults...)."""
    overrides = getattr(request, "param", {})
    return EmulatorConfig(**{"api_keys": [EMULATOR_KEY], **FAST_EMULATOR, **overrides})


@pytest.fixture
async def emulator(emulator_config: EmulatorConfig) -> AsyncIterator[EmulatorHandle]:
    async with serve_emulator(emulator_config) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Each test starts and ends with structlog's defaults (the CLI configures it)."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def force_state(store: Any, subject_id: int, *, now: float, state: str, **values: Any) -> Any:
    """Put a subject in ``state`` directly, as a crash or an older version left it: the
    compare-and-set of the state machine is for the engine, not for setting up a scene."""
    store._db.execute("UPDATE subjects SET state = ? WHERE id = ?", (state, subject_id))
    return store.update_subject(subject_id, now=now, **values)


def force_generation_state(
    store: Any, generation_id: int, *, now: float, state: str, **values: Any
) -> None:
    """:func:`force_state` for a generation."""
    store._db.execute("UPDATE generations SET state = ? WHERE id = ?", (state, generation_id))
    store.update_generation(generation_id, now=now, **values)


_OPENED_STORES: list[Any] = []


def closed_after_test(store: Any) -> Any:
    """``store``, closed when the test ends (for helpers that hand one out)."""
    _OPENED_STORES.append(store)
    return store


@pytest.fixture(autouse=True)
def _close_opened_stores() -> Iterator[None]:
    yield
    while _OPENED_STORES:
        _OPENED_STORES.pop().close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole run (see :mod:`tests.postgres`)."""
    with PostgresServer.start() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database of its own for each test."""
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The state store of each backend: the same test runs against SQLite and PostgreSQL."""
    from pipeline.store.postgres import PostgresStore
    from pipeline.store.sqlite import SqliteStore

    if request.param == "sqlite":
        store: Any = SqliteStore(tmp_path / "state.db")
    else:
        store = PostgresStore(request.getfixturevalue("postgres_url"))
    with store:
        yield store


def reopened(store: Any, **options: Any) -> Any:
    """Another connection to ``store``'s database (a process after a kill, a reader)."""
    from pipeline.store.postgres import PostgresStore
    from pipeline.store.sqlite import SqliteStore

    if isinstance(store, PostgresStore):
        return PostgresStore(store.url, **options)
    return SqliteStore(store._path, **options)
