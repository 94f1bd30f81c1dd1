"""Fixtures of the reliability suite: runs against a faulty emulator, URLs that expire on
cue, and the figures the suite measured (printed at the end, written to
``test-artifacts/reliability.json``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from yarl import URL

from pipeline.api.client import ApiClient
from pipeline.cli.samples import create_samples
from pipeline.emulator import EmulatorConfig, EmulatorHandle, serve_emulator
from pipeline.engine.outbox import SubjectOutbox
from pipeline.engine.runner import Runner, RunResult
from pipeline.jobfile.loading import JobConfig, load_job
from pipeline.store.sqlite import SqliteStore
from pipeline.store.states import GEN_DONE, SETTLED_STATES
from tests.conftest import EMULATOR_KEY, FAST_EMULATOR, fast_settings, write_job

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

#: What the suite measured, by figure: summed over the tests that ran.
FIGURES: dict[str, Counter[str]] = {}


def record(figure: str, counts: dict[str, int] | Counter[str]) -> None:
    """Add ``counts`` to one of the suite's figures (``faults injected`` ...)."""
    FIGURES.setdefault(figure, Counter()).update({k: int(v) for k, v in counts.items()})


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for figure, counts in sorted(FIGURES.items()):
        shown = ", ".join(f"{key} {value}" for key, value in sorted(counts.items()))
        terminalreporter.write_line(f"{figure}: {shown}")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "reliability.json").write_text(
        json.dumps({k: dict(v) for k, v in FIGURES.items()}, indent=2, sort_keys=True) + "\n"
    )


class SkewClock:
    """The real clock plus an offset a test can push forward: lets an emulator's presigned
    URLs expire between the moment they are handed out and the moment they are used."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@dataclass
class Faulty:
    """A fault-injecting emulator, in process, on a clock that can jump."""

    handle: EmulatorHandle
    clock: SkewClock

    @property
    def base_url(self) -> str:
        return self.handle.base_url

    @property
    def counters(self) -> dict[str, Any]:
        return self.handle.emulator.counters_snapshot()


@pytest.fixture
def faults(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Emulator overrides; parametrize indirectly."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
async def faulty(faults: dict[str, Any]) -> AsyncIterator[Faulty]:
    clock = SkewClock()
    # The account's limit is as high as the pipeline is told (fast_settings): 429s come
    # from the faults injected, or from a test that lowers it on purpose.
    config = EmulatorConfig(**{"api_keys": [EMULATOR_KEY], "seed": 7, **FAST_EMULATOR,
                               "txt2img_images_per_minute": 1000, **faults})
    async with serve_emulator(config, clock=clock) as handle:
        yield Faulty(handle, clock)


def make_job(tmp_path: Path, *, subjects: int, images: int = 3, prompts: int = 1,
             image_num: int = 2, extra: str = "") -> JobConfig:
    """A job over ``subjects`` sample folders (128 px pictures, to keep the emulator quick)."""
    job_file = write_job(tmp_path, prompts=prompts, image_num=image_num, extra=extra)
    text = job_file.read_text().replace("[generation]", "[generation]\nwidth = 128\nheight = 128")
    job_file.write_text(text)
    create_samples(tmp_path / "inbox", count=subjects, images_per_subject=images,
                   include_bad=False)
    return load_job(job_file)


async def run_pass(job: JobConfig, base_url: str, tmp_path: Path, *, max_wait: float = 30,
                   **settings: Any) -> RunResult:
    config = fast_settings(base_url, tmp_path / "state", **settings)
    return await Runner(job, config).run_once(max_wait=max_wait)


async def run_until_settled(job: JobConfig, base_url: str, tmp_path: Path, *, passes: int = 4,
                            **settings: Any) -> RunResult:
    """Passes, as cron runs them, until no subject is left in flight (at most ``passes``).

    A subject whose requests kept failing within one pass stays where it was, with the
    reason; the next pass carries it on. Returns the last pass's result."""
    for _ in range(passes):
        result = await run_pass(job, base_url, tmp_path, **settings)
        if all(s.state in SETTLED_STATES for s in result.subjects):
            break
    return result


def open_store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "state" / "state.db")


def assert_outbox_exact(tmp_path: Path, image_num: int, job: str = "test") -> int:
    """Every prompt recorded done has its N pictures and sidecars, nothing else; no temp files.
    Returns how many pictures were checked."""
    root = tmp_path / "outbox" / job
    assert not [p for p in root.rglob("*") if p.name.endswith(".part")]
    checked = 0
    with open_store(tmp_path) as store:
        assert store.integrity_problems() == []
        for subject in store.subjects(job):
            place = SubjectOutbox(root, subject.name, subject.version)
            folder = place.folder
            for generation in store.generations(subject.id):
                stems = [place.picture_name(generation.slug, n, "png")[:-4]
                         for n in range(1, image_num + 1)]
                expected = sorted(f"{stem}{ext}" for stem in stems for ext in (".json", ".png"))
                files = sorted(p.name for p in (folder / generation.slug).glob("*")) \
                    if (folder / generation.slug).is_dir() else []
                if generation.state == GEN_DONE:
                    assert files == expected, (subject.name, generation.slug, files)
                    checked += image_num
                else:
                    assert generation.error, (subject.name, generation.slug)
    return checked


class UrlExpiry:
    """Makes presigned URLs expire just before the client uses them.

    Patches the client's PUT and download so that, on the first use for a given local file,
    the emulator's clock jumps past the URL's lifetime first: as if the pipeline had been
    too slow to use it. Downloads to paths containing one of ``always`` get a URL the
    storage refuses every time (403, as an expired one).
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, clock: SkewClock, jump: float) -> None:
        self.clock = clock
        self.jump = jump
        self.expired: Counter[str] = Counter()
        self.always: tuple[str, ...] = ()
        self._seen: set[tuple[str, str]] = set()
        put_file, download_once = ApiClient.put_file, ApiClient._download_once

        async def put(client: ApiClient, url: str, path: Path, content_type: str) -> int:
            self._expire_first_use("upload", path)
            return await put_file(client, url, path, content_type)

        async def download(client: ApiClient, url: URL, dest: Path, *args: Any) -> Any:
            if "/_s3/images/" in url.path:
                if any(part in str(dest) for part in self.always):
                    # never valid
                    url = URL(str(url).replace("X-Amz-Signature=", "X-Amz-Signature=0"))
                    self.expired["image (never valid)"] += 1
                else:
                    self._expire_first_use("image", dest)
            return await download_once(client, url, dest, *args)

        monkeypatch.setattr(ApiClient, "put_file", put)
        monkeypatch.setattr(ApiClient, "_download_once", download)

    def _expire_first_use(self, kind: str, path: Path) -> None:
        key = (kind, str(path))
        if key in self._seen:
            return
        self._seen.add(key)
        self.clock.offset += self.jump
        self.expired[kind] += 1


@pytest.fixture
def expiring(monkeypatch: pytest.MonkeyPatch, faulty: Faulty) -> Iterator[UrlExpiry]:
    yield UrlExpiry(monkeypatch, faulty.clock, jump=3.0)


@pytest.fixture
def fresh_logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event of the test, as dicts."""
    with structlog.testing.capture_logs() as events:
        yield events
