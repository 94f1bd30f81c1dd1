"""Telling someone a run is over: the job file's ``[on_complete]`` webhook and command.

    payload = payload_for(job.job.name, subjects, RUN_FINISHED, report=html_path)
    if job.on_complete is not None:
        result = await notify(job.on_complete, payload)   # never raises

The webhook gets the payload as a JSON POST, retried ``retries`` times with exponential
backoff on connection errors, timeouts, 408, 429 and 5xx, each attempt bounded by
``timeout_seconds``. The command gets the same JSON on its standard input; a string is run by
``/bin/sh``, a list is executed as it is. A failed or timed-out run is retried like the
webhook (so a command should be safe to run twice); each run is killed with its whole
process group when it outlives ``timeout_seconds``, and none inherits ``LORA_API_KEY``.
Both run concurrently, so a notification takes at most about
``(retries + 1) * timeout_seconds`` plus the backoff.

Nothing here raises into the pipeline: every failure is logged and described in the
returned :class:`NotifyResult`. The payload holds names, states, paths and errors, never the
API key (``secrets`` scrubs any text that should still contain it), and logs show only the
webhook's scheme and host, since a webhook URL often embeds a token.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Coroutine, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import aiohttp
import structlog

from .. import __version__
from ..api.retry import RetryPolicy, backoff_delay
from ..jobfile.schema import NotifySection
from ..logs import Redactor
from ..store.states import SUBJECT_STATES
from ..views.summary import SubjectSummary

__all__ = [
    "RUN_FINISHED",
    "SUBJECT_FAILED",
    "Delivery",
    "NotifyResult",
    "notify",
    "payload_for",
    "retry_policy",
    "should_retry_status",
]

log = structlog.get_logger(__name__)

Event = Literal["run_finished", "subject_failed"]
RUN_FINISHED: Final = "run_finished"
SUBJECT_FAILED: Final = "subject_failed"

BASE_DELAY: Final = 1.0
MAX_DELAY: Final = 30.0
#: Statuses worth another attempt; any other 4xx will not change by asking again.
RETRY_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Environment variables a notification command does not inherit.
HIDDEN_ENV: Final = ("LORA_API_KEY",)
#: Output of a failed command kept for the log.
OUTPUT_TAIL: Final = 2000
#: After a kill, how long to wait for the process to be reaped.
REAP_SECONDS: Final = 5.0


@dataclass(frozen=True)
class Delivery:
    """How one target (the webhook or the command) went."""

    target: Literal["webhook", "command"]
    ok: bool
    attempts: int
    detail: str


@dataclass(frozen=True)
class NotifyResult:
    """What :func:`notify` did; ``None`` for a target the section does not set."""

    webhook: Delivery | None = None
    command: Delivery | None = None

    @property
    def ok(self) -> bool:
        """True when every configured target succeeded."""
        return all(d.ok for d in (self.webhook, self.command) if d is not None)


# --- the payload -----------------------------------------------------------------------------


def payload_for(
    job_name: str,
    subjects: Sequence[SubjectSummary],
    event: Event,
    *,
    report: Path | None = None,
    secrets: Iterable[str] = (),
    now: float | None = None,
) -> dict[str, Any]:
    """The JSON summary sent to the webhook and the command.

    >>> payload_for("portraits", [], "run_finished", now=0)["event"]
    'run_finished'

    Per subject: name, version, state, error, outputs (picture paths), the LoRA file and
    prompts done of total; plus counts per state. For ``subject_failed`` pass only the
    subjects that failed. Any text containing one of ``secrets`` has it replaced by ``***``.
    """
    counts = {state: 0 for state in SUBJECT_STATES}
    for s in subjects:
        counts[s.state] = counts.get(s.state, 0) + 1
    payload: dict[str, Any] = {
        "event": event,
        "job": job_name,
        "at": time.time() if now is None else now,
        "counts": {state: n for state, n in counts.items() if n},
        "subjects": [
            {
                "name": s.name,
                "version": s.version,
                "state": s.state,
                "error": s.error,
                "outputs": list(s.outputs),
                "lora_path": s.lora_path,
                "prompts_done": s.prompts_done,
                "prompts_total": s.prompts_total,
            }
            for s in subjects
        ],
    }
    if report is not None:
        payload["report"] = str(report)
    scrubbed = Redactor(list(secrets))(None, "notify", payload)
    return dict(scrubbed)


# --- delivery --------------------------------------------------------------------------------


async def notify(
    section: NotifySection,
    payload: dict[str, Any],
    *,
    session: aiohttp.ClientSession | None = None,
    base_delay: float = BASE_DELAY,
) -> NotifyResult:
    """Send ``payload`` to the section's webhook and command, concurrently; never raises
    (cancellation aside: a cancelled notify kills its command and lets the cancel through).

    ``session`` is used for the webhook when given (and left open); otherwise one is made
    and closed here. ``base_delay`` is the first backoff delay, doubled at each retry.
    """
    try:
        body = json.dumps(payload, default=str, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        log.error("notify.bad_payload", error=str(exc))
        failed = f"payload is not JSON: {exc}"
        return NotifyResult(
            webhook=Delivery("webhook", False, 0, failed) if section.webhook else None,
            command=Delivery("command", False, 0, failed) if section.command else None,
        )
    event = str(payload.get("event", ""))
    webhook: asyncio.Task[Delivery] | None = None
    command: asyncio.Task[Delivery] | None = None
    async with asyncio.TaskGroup() as group:
        if section.webhook:
            webhook = group.create_task(_guarded(
                "webhook", post_webhook(section, body, event, session=session,
                                        base_delay=base_delay)))
        if section.command:
            command = group.create_task(_guarded(
                "command", run_command(section, body, base_delay=base_delay)))
    return NotifyResult(
        webhook=webhook.result() if webhook else None,
        command=command.result() if command else None,
    )


async def _guarded(
    target: Literal["webhook", "command"], work: Coroutine[Any, Any, Delivery]
) -> Delivery:
    """The delivery's result, or a failed one for anything unforeseen it raised."""
    try:
        return await work
    except Exception as exc:  # a notification must never fail the run
        log.exception("notify.unexpected", target=target)
        return Delivery(target, False, 0, f"unexpected error: {type(exc).__name__}: {exc}")


def retry_policy(section: NotifySection, base_delay: float = BASE_DELAY) -> RetryPolicy:
    """How the webhook and the command are retried: ``retries`` more attempts, the pause
    doubling from ``base_delay`` up to ``MAX_DELAY``. No jitter: a run notifies one
    receiver once, so there is no crowd of retries to spread out.

    >>> [backoff_delay(n, retry_policy(NotifySection(command="true"))) for n in (1, 2, 10)]
    [1.0, 2.0, 30.0]
    """
    return RetryPolicy(max_attempts=section.retries + 1, base_delay=base_delay,
                       max_delay=MAX_DELAY, jitter=0.0)


def should_retry_status(status: int) -> bool:
    """Whether an HTTP answer with ``status`` is worth another attempt."""
    return status in RETRY_STATUSES or status >= 500


async def post_webhook(
    section: NotifySection,
    body: bytes,
    event: str = "",
    *,
    session: aiohttp.ClientSession | None = None,
    base_delay: float = BASE_DELAY,
) -> Delivery:
    """POST ``body`` (JSON) to the webhook, with retries and a timeout per attempt."""
    assert section.webhook is not None
    if session is None:
        async with aiohttp.ClientSession() as owned:
            return await post_webhook(section, body, event, session=owned,
                                      base_delay=base_delay)
    url, shown = section.webhook, _shown_url(section.webhook)
    headers = {"Content-Type": "application/json",
               "User-Agent": f"lora-pipeline/{__version__}",
               "X-Lora-Pipeline-Event": event}
    timeout = aiohttp.ClientTimeout(total=section.timeout_seconds)
    policy = retry_policy(section, base_delay)
    attempts = policy.max_attempts
    detail = ""
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            await asyncio.sleep(backoff_delay(attempt - 1, policy))
        try:
            async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
                status = resp.status
        except TimeoutError:
            detail = f"no answer within {section.timeout_seconds:g} s"
        except aiohttp.ClientError as exc:
            detail = f"{type(exc).__name__}: {exc}".replace(url, shown)
        else:
            if 200 <= status < 300:
                log.info("notify.webhook", url=shown, status=status, attempts=attempt)
                return Delivery("webhook", True, attempt, f"HTTP {status}")
            detail = f"HTTP {status}"
            if not should_retry_status(status):
                log.warning("notify.webhook_refused", url=shown, status=status,
                            attempts=attempt)
                return Delivery("webhook", False, attempt, detail)
        log.warning("notify.webhook_attempt_failed", url=shown, attempt=attempt,
                    of=attempts, error=detail)
    log.error("notify.webhook_failed", url=shown, attempts=attempts, error=detail)
    return Delivery("webhook", False, attempts, f"gave up after {attempts} attempts: {detail}")


async def run_command(
    section: NotifySection, body: bytes, *, base_delay: float = BASE_DELAY
) -> Delivery:
    """Run the command with ``body`` on its standard input, within the timeout, again after
    a failure or a timeout up to ``retries`` times (not when it cannot be started at all)."""
    assert section.command is not None
    argv = (["/bin/sh", "-c", section.command] if isinstance(section.command, str)
            else list(section.command))
    policy = retry_policy(section, base_delay)
    for attempt in range(1, policy.max_attempts + 1):
        if attempt > 1:
            await asyncio.sleep(backoff_delay(attempt - 1, policy))
        delivery, retryable = await _run_once(section, body, argv)
        delivery = replace(delivery, attempts=attempt)
        if delivery.ok or not retryable:
            return delivery
    return delivery


async def _run_once(
    section: NotifySection, body: bytes, argv: list[str]
) -> tuple[Delivery, bool]:
    """One run of the command: how it went, and whether another run may do better."""
    # Settings read variables whatever their case (lora_api_key too): hide every spelling.
    env = {k: v for k, v in os.environ.items() if k.upper() not in HIDDEN_ENV}
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True,
        )
    except OSError as exc:
        log.error("notify.command_not_started", command=argv[0], error=str(exc))
        detail = f"cannot start {argv[0]}: {exc.strerror or exc}"
        return Delivery("command", False, 1, detail), False
    try:
        output, _ = await asyncio.wait_for(process.communicate(body), section.timeout_seconds)
    except TimeoutError:
        await _kill(process)
        log.error("notify.command_timeout", command=argv[0],
                  timeout=section.timeout_seconds)
        detail = f"killed after {section.timeout_seconds:g} s without finishing"
        return Delivery("command", False, 1, detail), True
    except BaseException:
        await _kill(process)
        raise
    code = process.returncode
    if code == 0:
        log.info("notify.command", command=argv[0], exit_code=0)
        return Delivery("command", True, 1, "exit code 0"), False
    tail = output.decode("utf-8", "replace")[-OUTPUT_TAIL:].strip()
    log.error("notify.command_failed", command=argv[0], exit_code=code, output=tail)
    detail = f"exit code {code}" + (f": {tail}" if tail else "")
    return Delivery("command", False, 1, detail), True


async def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill the command and everything it started (its own process group), then reap it."""
    if process.returncode is None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    with suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), REAP_SECONDS)


def _shown_url(url: str) -> str:
    """The URL as logs may show it: scheme and host only (paths often carry tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
