"""``/metrics`` of a watch running against the emulator, read over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from pipeline.api import ApiClient
from pipeline.api.stats import RETRY_REASONS
from pipeline.cli.commands import _run, build_parser
from pipeline.engine.ratelimit import LIMITER_STATS, ImageRateLimiter
from pipeline.engine.runner import Runner
from pipeline.errors import ConfigError, TransientApiError
from pipeline.store.states import DONE, SUBJECT_STATES
from pipeline.views.metrics import MetricsServer
from pipeline.views.summary import EXIT_OK
from tests.conftest import EMULATOR_KEY, RecordingClock, fast_settings
from tests.engine.folders import write_subjects
from tests.engine.test_runner import setup_job, store


async def scrape(port: int) -> tuple[str, dict[str, list]]:
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    families = {f.name: f.samples for f in text_string_to_metric_families(text)}
    return text, families


def value(samples: list, **labels: str) -> float:
    [sample] = [s for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]
    return float(sample.value)


async def test_metrics_of_a_running_watch_match_the_store(tmp_path: Path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=0, image_num=2)
    settings = fast_settings(emulator.base_url, tmp_path / "state")
    async with MetricsServer(job, settings, port=0) as metrics:
        _, before = await scrape(metrics.port)  # before the watch made its store
        assert all(s.value == 0 for s in before["lora_pipeline_subjects"])
        runner = Runner(job, settings, on_round=metrics.round_done)
        watching = asyncio.create_task(runner.watch())
        write_subjects(tmp_path / "inbox", 2, 3)
        db = store(tmp_path)
        for _ in range(200):  # the watcher reacts to the file system: bounded real wait
            rows = db.subjects("test")
            if len(rows) == 2 and all(row.state == DONE for row in rows):
                break
            await asyncio.sleep(0.05)
        text, families = await scrape(metrics.port)  # while the watch still runs
        runner.stop()
        result = await asyncio.wait_for(watching, 10)

    assert result.exit_code == EXIT_OK
    subjects = families["lora_pipeline_subjects"]
    by_state = Counter(row.state for row in db.subjects("test"))
    assert {s.labels["state"] for s in subjects} == set(SUBJECT_STATES)
    for state in SUBJECT_STATES:
        assert value(subjects, job="test", state=state) == by_state[state]
    assert value(subjects, state=DONE) == 2
    assert value(families["lora_pipeline_trainings_in_flight"], job="test") == 0

    ledger = [entry for entry in db.ledger("test") if entry.counted]
    paid = families["lora_pipeline_paid_requests"]  # the family's name, without _total
    assert {s.name for s in paid} >= {"lora_pipeline_paid_requests_total"}
    assert value(paid, endpoint="training", kind="subject") == 2
    txt2img = [entry for entry in ledger if entry.endpoint == "txt2img"]
    assert value(paid, endpoint="txt2img", kind="") == len(txt2img) == 4  # 2 prompts x 2
    units = families["lora_pipeline_paid_units"]
    assert value(units, endpoint="txt2img") == sum(entry.units for entry in txt2img)

    assert value(families["lora_pipeline_exit_code"], job="test") == EXIT_OK
    assert value(families["lora_pipeline_spend_ceiling_reached"], job="test") == 0
    last_round = value(families["lora_pipeline_last_round_end_timestamp_seconds"], job="test")
    assert last_round >= max(row.created_at for row in db.subjects("test"))

    # Labels are the job and bounded values only: no subject's name, no key.
    for name in ("alice", "bob", EMULATOR_KEY, str(tmp_path)):
        assert name not in text


async def test_a_port_already_taken_is_a_usage_error(tmp_path: Path) -> None:
    job, _ = setup_job(tmp_path, subjects=0)
    settings = fast_settings("http://127.0.0.1:9", tmp_path / "state")
    async with MetricsServer(job, settings, port=0) as first:
        with pytest.raises(ConfigError, match="cannot listen"):
            async with MetricsServer(job, settings, port=first.port):
                pass


def test_watch_takes_the_metrics_options_and_run_does_not() -> None:
    args = build_parser().parse_args(["watch", "job.toml", "--metrics-port", "9464"])
    assert (args.metrics_host, args.metrics_port) == ("127.0.0.1", 9464)
    assert build_parser().parse_args(["watch", "job.toml"]).metrics_port is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "job.toml", "--metrics-port", "9464"])


async def test_the_command_refuses_a_taken_port_before_any_work(tmp_path: Path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=1)
    settings = fast_settings(emulator.base_url, tmp_path / "state")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            await _run(job, settings, Console(file=io.StringIO()), None, ("127.0.0.1", port))
    assert not (tmp_path / "state" / "state.db").exists()
    assert emulator.emulator.counters_snapshot()["uploads"] == 0


async def test_a_watch_whose_service_answers_nothing_shows_exit_8(tmp_path: Path) -> None:
    from pipeline.views.summary import EXIT_UNREACHABLE

    job, _ = setup_job(tmp_path, subjects=0)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: every request is refused
    settings = fast_settings(f"http://127.0.0.1:{port}", tmp_path / "state")
    async with MetricsServer(job, settings, port=0) as metrics:
        runner = Runner(job, settings, on_round=metrics.round_done)
        watching = asyncio.create_task(runner.watch())
        write_subjects(tmp_path / "inbox", 1, 2)
        code = None
        for _ in range(200):  # the watcher reacts to the file system: bounded real wait
            _, families = await scrape(metrics.port)
            samples = families.get("lora_pipeline_exit_code")
            code = value(samples, job="test") if samples else None
            if code == EXIT_UNREACHABLE:
                break
            await asyncio.sleep(0.05)
        runner.stop()
        await asyncio.wait_for(watching, 10)
    assert code == EXIT_UNREACHABLE


FAULTY = {"fault_429": 0.4, "fault_5xx": 0.2, "seed": 7, "fault_routes": ["GET /v3/training"]}


@pytest.mark.parametrize("emulator_config", [FAULTY], indirect=True)
async def test_retries_and_rate_limit_waits_are_served(tmp_path: Path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=0)
    settings = fast_settings(emulator.base_url, tmp_path / "state")
    clock = RecordingClock()
    limiter = ImageRateLimiter(1, clock)
    limiter_before = (LIMITER_STATS.waits, LIMITER_STATS.wait_seconds)
    await limiter.acquire(1)
    await limiter.acquire(1)  # waits out the window: 60 s on the recording clock
    async with ApiClient(settings, clock=clock, rand=lambda: 0.5) as api, \
            MetricsServer(job, settings, port=0) as metrics:
        _, before = await scrape(metrics.port)  # before the first round: zeros
        for _ in range(12):
            with contextlib.suppress(TransientApiError):  # all of one call's tries failed
                [task async for task in api.iter_training_tasks()]
        metrics.round_done(clock.now(), False, api.reachability)
        text, families = await scrape(metrics.port)

    assert {s.value for s in before["lora_pipeline_api_retries"]} == {0}
    assert value(before["lora_pipeline_rate_limit_waits"], source="service") == 0
    stats, injected = api.stats, emulator.emulator.counters_snapshot()["faults_injected"]
    assert stats.rate_limited == injected["429"] > 0
    assert stats.retries["rate_limited"] == stats.rate_limit_waits > 0
    assert stats.retries["server_error"] > 0
    # The clock slept the limiter's 60 s, then the client's waits after 429s and 5xx.
    assert clock.sleeps[0] == 60
    assert 0 < stats.rate_limit_wait_seconds < sum(clock.sleeps[1:])

    retries = families["lora_pipeline_api_retries"]
    assert {s.labels["reason"] for s in retries} == set(RETRY_REASONS)
    for reason in RETRY_REASONS:
        assert value(retries, job="test", reason=reason) == stats.retries[reason]
    assert value(families["lora_pipeline_api_rate_limited"], job="test") == injected["429"]
    waits = families["lora_pipeline_rate_limit_waits"]
    seconds = families["lora_pipeline_rate_limit_wait_seconds"]
    assert value(waits, source="service") == stats.rate_limit_waits
    assert value(seconds, source="service") == pytest.approx(stats.rate_limit_wait_seconds)
    assert value(waits, source="limiter") == LIMITER_STATS.waits >= limiter_before[0] + 1
    assert value(seconds, source="limiter") == pytest.approx(LIMITER_STATS.wait_seconds)
    assert LIMITER_STATS.wait_seconds - limiter_before[1] == pytest.approx(60)
    assert "lora_pipeline_api_retries_total{" in text
    assert "lora_pipeline_rate_limit_wait_seconds_total{" in text


@pytest.mark.parametrize("emulator_config", [{
    "fault_429": 0.5, "seed": 3, "fault_routes": ["POST /v3/assets/training_dataset"],
}], indirect=True)
async def test_a_watch_serves_the_retries_of_its_client(tmp_path: Path, emulator) -> None:
    job, _ = setup_job(tmp_path, subjects=0)
    settings = fast_settings(emulator.base_url, tmp_path / "state")
    async with MetricsServer(job, settings, port=0) as metrics:
        runner = Runner(job, settings, on_round=metrics.round_done)
        watching = asyncio.create_task(runner.watch())
        write_subjects(tmp_path / "inbox", 2, 3)
        db = store(tmp_path)
        families: dict[str, list] = {}
        for _ in range(200):  # the watcher reacts to the file system: bounded real wait
            _, families = await scrape(metrics.port)
            if value(families["lora_pipeline_api_retries"], reason="rate_limited") > 0 and \
                    all(row.state == DONE for row in db.subjects("test")):
                break
            await asyncio.sleep(0.05)
        runner.stop()
        await asyncio.wait_for(watching, 10)

    injected = emulator.emulator.counters_snapshot()["faults_injected"]["429"]
    retried = value(families["lora_pipeline_api_retries"], job="test", reason="rate_limited")
    assert 0 < retried <= injected
    assert 0 < value(families["lora_pipeline_api_rate_limited"], job="test") <= injected
    assert value(families["lora_pipeline_rate_limit_waits"], source="service") == retried
    assert value(families["lora_pipeline_rate_limit_wait_seconds"], source="service") > 0
