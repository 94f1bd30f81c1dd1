"""Credentials and secrets: a bad key stops the run at once with one clear error, and the
key never appears in anything a run writes, however badly the run goes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import structlog
from aiohttp import web

from pipeline.cli.samples import create_samples
from pipeline.engine.runner import Runner
from pipeline.jobfile.loading import load_job
from pipeline.store.sqlite import SqliteStore
from pipeline.views.summary import EXIT_BAD_CREDENTIALS, EXIT_SIGTERM
from tests.conftest import fast_settings, write_job

from .conftest import record
from .harness import (
    EmulatorProcess,
    SoakConfig,
    add_subjects,
    clean_env,
    start_pipeline,
    subject_names,
)
from .harness import write_workspace as harness_workspace

CANARY = "sk-SECRET-canary-123"
FAST = {"queue_seconds": 0.1, "train_seconds": 0.5, "deploy_seconds": 0.1,
        "generation_queue_seconds": 0.05, "generation_seconds": 0.2}


def workspace(root: Path, base_url: str, key: str | None, subjects: int = 3) -> Path:
    """The harness's job and config, with ``key`` (None: no key at all)."""
    job = harness_workspace(root, base_url, SoakConfig(subjects=subjects, max_training_retries=1))
    config = root / "config.env"
    lines = [line for line in config.read_text().splitlines() if "LORA_API_KEY" not in line]
    if key is not None:
        lines.append(f"LORA_API_KEY={key}")
    config.write_text("\n".join(lines) + "\n")
    add_subjects(root, subject_names(subjects), 3, seed=5)
    return job


def leaks(root: Path, secret: str) -> list[str]:
    """Every file under ``root`` holding ``secret`` (as bytes), but the settings file."""
    needle = secret.encode()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.name != "config.env" and needle in p.read_bytes())


def test_a_refused_key_stops_at_once_with_one_clear_error(tmp_path) -> None:
    emulator = EmulatorProcess(tmp_path, FAST, api_key="sk-the-right-key")
    try:
        job = workspace(tmp_path, emulator.base_url, CANARY)
        process = start_pipeline(tmp_path, 0, "run", str(job), "--max-wait", "30")
        code = process.wait(60)
        requests = emulator.counters()["requests"]
    finally:
        emulator.stop()
    out = (tmp_path / "logs" / "000.out").read_text()
    err = (tmp_path / "logs" / "000.err").read_text()
    assert code == EXIT_BAD_CREDENTIALS
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # on stderr
    assert errors == ["error: the API refused the key (INVALID_API_KEY). Set LORA_API_KEY in "
                      "config.env or the environment; nothing was retried."]
    assert "error:" not in out
    assert "api.retry" not in err and "Traceback" not in err
    api = {route: count for route, count in requests.items() if "/v3/" in route}
    assert sum(api.values()) == 1, api  # the first refusal stops every upload in flight
    assert leaks(tmp_path, CANARY) == [] and CANARY not in out + err
    record("credentials", {"bad key: requests before stopping": sum(api.values())})


def test_a_missing_key_says_so_without_a_request(tmp_path) -> None:
    emulator = EmulatorProcess(tmp_path, FAST)
    try:
        job = workspace(tmp_path, emulator.base_url, None, subjects=1)
        code = start_pipeline(tmp_path, 0, "run", str(job), "--max-wait", "30").wait(60)
        requests = emulator.counters()["requests"]
    finally:
        emulator.stop()
    err = (tmp_path / "logs" / "000.err").read_text()
    assert code == EXIT_BAD_CREDENTIALS
    assert "error: no API key: LORA_API_KEY is empty or not set" in err
    assert not [r for r in requests if "/v3/" in r], requests  # known before any request
    assert not (tmp_path / "outbox").exists()  # nor was anything taken in


#: ``main`` with a bug planted in the collect stage: a traceback in the logs, for sure.
WITH_A_BUG = r'''
import sys
from pipeline.engine.stages import collect

def broken(*args, **kwargs):
    raise RuntimeError("a bug planted by the test, to have a traceback logged")

collect.sidecar_data = broken
from pipeline.cli.commands import main
sys.exit(main(sys.argv[1:]))
'''


def with_a_bug(root: Path, number: int, job: Path) -> int:
    """One pass of ``main`` with :data:`WITH_A_BUG` planted; output in ``logs/`` too."""
    script = root / "with_a_bug.py"
    script.write_text(WITH_A_BUG)
    with open(root / "logs" / f"{number:03d}.out", "wb") as out, \
            open(root / "logs" / f"{number:03d}.err", "wb") as err:
        return subprocess.run(
            [sys.executable, str(script), "--config", str(root / "config.env"), "run", str(job),
             "--max-wait", "60"], cwd=root, env=clean_env(), stdout=out, stderr=err,
            timeout=120, check=False,
        ).returncode


FAULTS = {**FAST, "seed": 11, "fault_5xx": 0.1, "fault_429": 0.05,
          "fault_429_retry_after": 0.5, "fault_drop": 0.05, "fault_slow": 0.03,
          "slow_seconds": 2.0, "fault_training_failed": 0.3, "fault_generation_failed": 0.3}
# (With 6 subjects, a run where neither a training nor a picture fails is some 0.2% likely,
# and one where every training fails, so that the planted bug in collect is never reached,
# 0.07%. Requiring a failed training alone was 12% likely to miss; failing 60% of them
# left too few subjects to reach collect.)


def test_the_key_never_leaks_from_a_faulty_killed_run(tmp_path) -> None:
    emulator = EmulatorProcess(tmp_path, FAULTS, api_key=CANARY)
    try:
        job = workspace(tmp_path, emulator.base_url, CANARY, subjects=6)
        config = tmp_path / "config.env"
        config.write_text(config.read_text() + "LORA_LOG_LEVEL=debug\n")
        early = start_pipeline(tmp_path, 0, "run", str(job))  # Ctrl-C while starting up
        time.sleep(0.3)
        early.send_signal(signal.SIGINT)
        early.wait(30)
        with_a_bug(tmp_path, 1, job)  # before the pictures are all in: it will be hit
        killed = start_pipeline(tmp_path, 2, "run", str(job))
        time.sleep(2.0)
        killed.kill()
        killed.wait(30)
        stopped = start_pipeline(tmp_path, 3, "run", str(job))
        time.sleep(2.0)
        stopped.send_signal(signal.SIGTERM)
        assert stopped.wait(30) in (EXIT_SIGTERM, 0, 3, 4)
        for number in range(4, 7):
            start_pipeline(tmp_path, number, "run", str(job), "--max-wait", "60").wait(120)
        counters = emulator.counters()
    finally:
        emulator.stop()
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").iterdir())
    assert "prompt.crashed" in logs and "Traceback" in logs  # checked like the rest
    assert "api.retried" in logs and "failed" in logs  # retries end in one info line
    with SqliteStore(tmp_path / "state" / "state.db") as store:
        assert store.subjects("soak")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "state.db" for p in written) and any(p.suffix == ".json" for p in written)
    assert leaks(tmp_path, CANARY) == []
    faults = set(counters["faults_injected"])
    assert "5xx" in faults and faults & {"training_failed", "generation_failed"}, faults
    record("credentials", {"files scanned for the key (faulty run)": len(written)})


async def test_an_error_answer_quoting_the_key_is_not_stored(tmp_path) -> None:
    # A service (or a proxy in front of it) that echoes the Authorization header in its
    # error message: the key must not travel on into the state, the summary or the logs.
    async def refuse(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        return web.json_response(
            {"code": 400, "reason": "INVALID_REQUEST", "message": f"rejected header {header}"},
            status=400)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        job = load_job(write_job(tmp_path))
        create_samples(tmp_path / "inbox", count=1, images_per_subject=3, include_bad=False)
        settings = fast_settings(base_url, tmp_path / "state", api_key=CANARY)
        with structlog.testing.capture_logs() as events:
            result = await Runner(job, settings).run_once(max_wait=10)
    finally:
        await runner.cleanup()
    [subject] = result.subjects
    assert subject.error and "rejected header" in subject.error  # the reason is kept
    assert CANARY not in json.dumps([s.to_json() for s in result.subjects])
    assert CANARY not in json.dumps(events, default=str)
    assert leaks(tmp_path, CANARY) == []
