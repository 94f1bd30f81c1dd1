"""Supervised tasks: restarted after a failure, with the shared backoff; bad keys end them."""

from __future__ import annotations

import pytest

from pipeline.api.retry import RetryPolicy
from pipeline.engine.concurrency import supervise
from pipeline.errors import BadCredentials


async def test_a_failing_task_is_restarted_after_doubling_pauses() -> None:
    pauses: list[float] = []
    runs = 0

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs <= 7:
            raise RuntimeError(f"bad cycle {runs}")

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    await supervise("monitor", run, sleep=sleep)
    assert runs == 8
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0]


async def test_restarts_follow_the_policy_given_and_bad_credentials_end_them() -> None:
    pauses: list[float] = []
    runs = 0

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("flaky")
        raise BadCredentials(401, "INVALID_API_KEY", "", "/v3/user")

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    quick = RetryPolicy(base_delay=0.25, max_delay=0.4, jitter=0.0)
    with pytest.raises(BadCredentials):
        await supervise("watcher", run, sleep=sleep, restarts=quick)
    assert pauses == [0.25, 0.4]
