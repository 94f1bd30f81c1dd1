"""What the client logs of its retries, and how it counts the service's answers."""

from __future__ import annotations

import re

import pytest
from structlog.testing import capture_logs

from pipeline.api import ApiClient
from pipeline.errors import TransientApiError

STATUS_URL = re.compile(r"^http://api\.test/v3/training/subject\?task_id=t1$")


async def test_each_retry_is_debug_and_the_outcome_one_info_line(settings, clock, mocked) -> None:
    mocked.get(STATUS_URL, status=503, body="busy")
    mocked.get(STATUS_URL, status=502, body="")
    mocked.get(STATUS_URL, payload={"task_id": "t1", "task_status": "TRAINING"})
    with capture_logs() as logs:
        async with ApiClient(settings, clock=clock, rand=lambda: 0.5) as api:
            await api.training_status("subject", "t1")
    retries = [e for e in logs if e["event"] == "api.retry"]
    assert [e["log_level"] for e in retries] == ["debug", "debug"]
    [done] = [e for e in logs if e["event"] == "api.retried"]
    assert done["log_level"] == "info"
    assert (done["attempts"], done["outcome"]) == (3, "succeeded")
    assert api.reachability.answered == 1 and api.reachability.unanswered == 2
    assert not api.reachability.unreachable


async def test_a_call_that_never_succeeds_says_so_once(settings, clock, mocked) -> None:
    for _ in range(settings.retry_max_attempts):
        mocked.get(STATUS_URL, status=503, body="busy")
    with capture_logs() as logs:
        async with ApiClient(settings, clock=clock, rand=lambda: 0.5) as api:
            with pytest.raises(TransientApiError):
                await api.training_status("subject", "t1")
    [done] = [e for e in logs if e["event"] == "api.retried"]
    assert (done["attempts"], done["outcome"]) == (settings.retry_max_attempts, "failed")
    assert not [e for e in logs if e["event"] == "api.retry" and e["log_level"] != "debug"]
    assert api.reachability.unreachable
    assert api.reachability.last_error is not None and "503" in api.reachability.last_error


async def test_a_call_that_succeeds_at_once_logs_nothing(settings, clock, mocked) -> None:
    mocked.get(STATUS_URL, payload={"task_id": "t1", "task_status": "TRAINING"})
    with capture_logs() as logs:
        async with ApiClient(settings, clock=clock) as api:
            await api.training_status("subject", "t1")
    assert logs == []
    assert api.reachability.answered == 1 and not api.reachability.unreachable
