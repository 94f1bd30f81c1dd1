"""``[on_complete]``: the webhook against a local receiver, the command, and the payload."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pipeline.api.retry import backoff_delay
from pipeline.jobfile.schema import NotifySection
from pipeline.notify.delivery import (
    RUN_FINISHED,
    SUBJECT_FAILED,
    notify,
    payload_for,
    retry_policy,
    should_retry_status,
)
from pipeline.views.summary import SubjectSummary

SECRET = "sk-secret-api-key-123"
FAST = 0.001  # base backoff delay in tests


def summary(name: str, state: str, **values: Any) -> SubjectSummary:
    base: dict[str, Any] = dict(
        name=name, version=1, state=state, images=10, rejected_files=[], warnings=[],
        training_name=None, task_id=None, task_status=None, progress=None, eta=None,
        model_name=None, lora_path=None, prompts_done=0, prompts_total=0, outputs=[],
        error=None,
    )
    return SubjectSummary(**{**base, **values})


SUBJECTS = [
    summary("alice", "done", outputs=["/out/alice/01-a/1.png", "/out/alice/01-a/2.png"],
            lora_path="/out/alice/model.safetensors", prompts_done=1, prompts_total=1),
    summary("bob", "failed", error="training FAILED: out of memory"),
]
PAYLOAD = payload_for("portraits", SUBJECTS, RUN_FINISHED, now=1_700_000_000.0)


@dataclass
class Receiver:
    """A webhook receiver on loopback that answers from a script of statuses."""

    url: str
    statuses: list[int]
    requests: list[dict[str, Any]] = field(default_factory=list)
    hang: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver(url="", statuses=[])

    async def hook(request: web.Request) -> web.Response:
        state.requests.append({"body": await request.json(), "headers": dict(request.headers),
                               "at": time.monotonic()})
        if state.hang:
            await state.release.wait()
        status = state.statuses.pop(0) if state.statuses else 200
        return web.Response(status=status, text="ok" if status < 300 else "nope")

    app = web.Application()
    app.router.add_post("/hook/secret-token", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/hook/secret-token"
    yield state
    state.release.set()
    await runner.cleanup()


def section(**values: Any) -> NotifySection:
    return NotifySection.model_validate({"timeout_seconds": 5, "retries": 3, **values})


# --- the payload -----------------------------------------------------------------------------


def test_payload_summarizes_each_subject() -> None:
    assert PAYLOAD["event"] == "run_finished"
    assert PAYLOAD["job"] == "portraits"
    assert PAYLOAD["counts"] == {"done": 1, "failed": 1}
    alice, bob = PAYLOAD["subjects"]
    assert alice == {
        "name": "alice", "version": 1, "state": "done", "error": None,
        "outputs": ["/out/alice/01-a/1.png", "/out/alice/01-a/2.png"],
        "lora_path": "/out/alice/model.safetensors", "prompts_done": 1, "prompts_total": 1,
    }
    assert bob["state"] == "failed" and bob["error"] == "training FAILED: out of memory"
    assert json.loads(json.dumps(PAYLOAD)) == PAYLOAD


def test_payload_for_a_failed_subject_names_the_report() -> None:
    payload = payload_for("portraits", SUBJECTS[1:], SUBJECT_FAILED,
                          report=Path("/out/portraits/report.html"))
    assert payload["event"] == "subject_failed"
    assert [s["name"] for s in payload["subjects"]] == ["bob"]
    assert payload["report"] == "/out/portraits/report.html"


def test_payload_never_carries_the_api_key() -> None:
    leaky = summary("carol", "failed", error=f"request with key {SECRET} refused")
    payload = payload_for("portraits", [leaky], SUBJECT_FAILED, secrets=[SECRET])
    text = json.dumps(payload)
    assert SECRET not in text
    assert "request with key *** refused" in text


def test_backoff_and_retry_policy() -> None:
    policy = retry_policy(section(command="true", retries=3), 0.5)
    assert policy.max_attempts == 4
    assert [backoff_delay(n, policy) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_delay(20, retry_policy(section(command="true"), 1.0)) == 30.0
    assert all(should_retry_status(s) for s in (408, 429, 500, 502, 503, 504, 599))
    assert not any(should_retry_status(s) for s in (200, 400, 401, 403, 404, 410))


# --- the webhook -----------------------------------------------------------------------------


async def test_webhook_gets_the_payload(receiver: Receiver) -> None:
    result = await notify(section(webhook=receiver.url), PAYLOAD, base_delay=FAST)
    assert result.ok
    assert result.webhook is not None and result.webhook.attempts == 1
    assert result.webhook.detail == "HTTP 200"
    assert result.command is None
    (request,) = receiver.requests
    assert request["body"] == PAYLOAD
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["X-Lora-Pipeline-Event"] == "run_finished"
    assert request["headers"]["User-Agent"].startswith("lora-pipeline/")


async def test_webhook_retries_server_errors_then_succeeds(receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    result = await notify(section(webhook=receiver.url, retries=3), PAYLOAD, base_delay=0.05)
    assert result.ok
    assert result.webhook is not None and result.webhook.attempts == 3
    assert [r["body"] for r in receiver.requests] == [PAYLOAD] * 3
    gaps = [b["at"] - a["at"] for a, b in pairwise(receiver.requests)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # exponential backoff


async def test_webhook_gives_up_after_its_retries(receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    result = await notify(section(webhook=receiver.url, retries=2), PAYLOAD, base_delay=FAST)
    assert not result.ok
    assert result.webhook is not None and result.webhook.attempts == 3
    assert "gave up after 3 attempts: HTTP 500" in result.webhook.detail
    assert len(receiver.requests) == 3


async def test_webhook_does_not_retry_a_refusal(receiver: Receiver) -> None:
    receiver.statuses = [404]
    result = await notify(section(webhook=receiver.url), PAYLOAD, base_delay=FAST)
    assert result.webhook is not None
    assert (result.webhook.ok, result.webhook.attempts) == (False, 1)
    assert len(receiver.requests) == 1


async def test_webhook_attempts_are_bounded_by_the_timeout(receiver: Receiver) -> None:
    receiver.hang = True
    started = time.monotonic()
    result = await notify(section(webhook=receiver.url, timeout_seconds=0.2, retries=1),
                          PAYLOAD, base_delay=FAST)
    elapsed = time.monotonic() - started
    assert result.webhook is not None and not result.webhook.ok
    assert result.webhook.attempts == 2
    assert "no answer within 0.2 s" in result.webhook.detail
    assert 0.4 <= elapsed < 2.0
    assert len(receiver.requests) == 2


async def test_unreachable_webhook_never_raises(
    unused_tcp_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}/hook/secret-token"
    result = await notify(section(webhook=url, retries=1), PAYLOAD, base_delay=FAST)
    assert result.webhook is not None and not result.webhook.ok
    assert result.webhook.attempts == 2
    assert "secret-token" not in result.webhook.detail
    assert "secret-token" not in capsys.readouterr().out  # logs show the host only


async def test_webhook_uses_the_session_it_is_given(receiver: Receiver) -> None:
    async with aiohttp.ClientSession() as session:
        result = await notify(section(webhook=receiver.url), PAYLOAD, session=session)
        assert result.ok
        assert not session.closed


# --- the command -----------------------------------------------------------------------------


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def test_command_gets_the_payload_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    command = _python(f"import sys; open({str(out)!r}, 'wb').write(sys.stdin.buffer.read())")
    result = await notify(section(command=command), PAYLOAD)
    assert result.ok
    assert result.command is not None and result.command.detail == "exit code 0"
    assert json.loads(out.read_text(encoding="utf-8")) == PAYLOAD


async def test_a_command_string_runs_in_the_shell(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    result = await notify(section(command=f"cat > '{out}'"), PAYLOAD)
    assert result.ok
    assert json.loads(out.read_text(encoding="utf-8")) == PAYLOAD


async def test_the_command_does_not_inherit_the_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LORA_API_KEY", SECRET)
    monkeypatch.setenv("SOMETHING_ELSE", "kept")
    out = tmp_path / "env.json"
    command = _python(f"import json, os; json.dump(dict(os.environ), open({str(out)!r}, 'w'))")
    assert (await notify(section(command=command), PAYLOAD)).ok
    env = json.loads(out.read_text(encoding="utf-8"))
    assert "LORA_API_KEY" not in env and env["SOMETHING_ELSE"] == "kept"


async def test_a_failing_command_is_retried_then_reported_not_raised(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    command = _python(f"import sys; open({str(runs)!r}, 'a').write('x'); print('disk full');"
                      " sys.exit(3)")
    result = await notify(section(command=command, retries=2), PAYLOAD, base_delay=FAST)
    assert result.command is not None and not result.ok
    assert result.command.detail == "exit code 3: disk full"
    assert result.command.attempts == 3 and runs.read_text() == "xxx"


async def test_a_command_that_fails_once_succeeds_on_the_retry(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    command = _python(
        f"import os, sys; first = not os.path.exists({str(runs)!r});"
        f" open({str(runs)!r}, 'a').write('x'); sys.exit(1 if first else 0)"
    )
    result = await notify(section(command=command, retries=3), PAYLOAD, base_delay=FAST)
    assert result.ok and result.command is not None and result.command.attempts == 2


async def test_a_missing_command_is_reported_not_raised(tmp_path: Path) -> None:
    result = await notify(section(command=[str(tmp_path / "no-such-program")]), PAYLOAD)
    assert result.command is not None and not result.command.ok
    assert "cannot start" in result.command.detail
    assert result.command.attempts == 1  # starting it again would not help


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has stopped running


async def _wait_for(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


async def test_a_command_that_outlives_its_timeout_is_killed_with_its_children(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    # The shell starts a child and waits: both must go.
    command = f"sleep 30 & echo $$ $! > '{pids}'; wait"
    started = time.monotonic()
    result = await notify(section(command=command, timeout_seconds=0.5, retries=0), PAYLOAD)
    assert time.monotonic() - started < 5
    assert result.command is not None and not result.command.ok
    assert result.command.detail == "killed after 0.5 s without finishing"
    for pid in map(int, pids.read_text().split()):
        assert await _wait_for(lambda pid=pid: not _alive(pid)), pid


async def test_cancelling_notify_kills_the_command(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    command = _python(f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid()));"
                      " time.sleep(30)")
    task = asyncio.create_task(notify(section(command=command, timeout_seconds=30), PAYLOAD))
    assert await _wait_for(lambda: pidfile.exists() and pidfile.read_text() != "")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pid = int(pidfile.read_text())
    assert await _wait_for(lambda: not _alive(pid))


async def test_webhook_and_command_both_run(receiver: Receiver, tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    result = await notify(section(webhook=receiver.url, command=f"cat > '{out}'"), PAYLOAD)
    assert result.ok
    assert result.webhook is not None and result.command is not None
    assert len(receiver.requests) == 1 and out.exists()


async def test_one_failing_target_does_not_stop_the_other(receiver: Receiver) -> None:
    result = await notify(section(webhook=receiver.url, command=["/nonexistent/program"]),
                          PAYLOAD, base_delay=FAST)
    assert not result.ok
    assert result.webhook is not None and result.webhook.ok
    assert result.command is not None and not result.command.ok
