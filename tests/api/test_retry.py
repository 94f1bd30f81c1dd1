from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from pipeline.api.retry import (
    MAX_RETRY_AFTER,
    RetryPolicy,
    backoff_delay,
    parse_retry_after,
    retry_after_of,
    should_retry,
)
from pipeline.errors import (
    BadCredentials,
    NotFound,
    PermanentApiError,
    RateLimited,
    TransientApiError,
    TransportError,
    UrlExpired,
)

POLICY = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=8.0)


@pytest.mark.parametrize(
    "error",
    [
        TransientApiError(503, "HTTP_503", "", "/p"),
        TransientApiError(500, "GET_RESULT_FAILED", "", "/p"),
        RateLimited(429, "RATE_LIMIT_EXCEEDED", "", "/p"),
        TransportError("reset", path="/p"),
    ],
)
def test_transient_errors_are_retried_until_the_last_attempt(error: Exception) -> None:
    assert should_retry(error, 1, POLICY)
    assert should_retry(error, 3, POLICY)
    assert not should_retry(error, 4, POLICY)


@pytest.mark.parametrize(
    "error",
    [
        PermanentApiError(400, "INVALID_REQUEST_BODY", "", "/p"),
        NotFound(404, "TASK_NOT_FOUND", "", "/p"),
        BadCredentials(403, "INVALID_API_KEY", "", "/p"),
        UrlExpired(403, "AccessDenied", "", "/p"),
        ValueError("not ours"),
    ],
)
def test_permanent_errors_are_never_retried(error: Exception) -> None:
    assert not should_retry(error, 1, POLICY)


def test_backoff_grows_exponentially_and_is_capped() -> None:
    delays = [backoff_delay(n, POLICY, rand=lambda: 0.5) for n in range(1, 7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    # asked after days of failures, it neither overflows nor grows past the cap
    assert backoff_delay(100_000, POLICY, rand=lambda: 0.5) == 8.0


def test_backoff_jitter_stays_within_a_quarter() -> None:
    assert backoff_delay(3, POLICY, rand=lambda: 0.0) == pytest.approx(3.0)
    assert backoff_delay(3, POLICY, rand=lambda: 1.0) == pytest.approx(5.0)


def test_a_policy_without_jitter_gives_exact_doublings() -> None:
    steady = RetryPolicy(base_delay=0.5, max_delay=30.0, jitter=0.0)
    delays = [backoff_delay(n, steady, rand=lambda: 1.0) for n in (1, 2, 3, 4, 20)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 30.0]
    wide = RetryPolicy(base_delay=1.0, jitter=0.5)
    assert backoff_delay(2, wide, rand=lambda: 0.0) == pytest.approx(1.0)
    assert backoff_delay(2, wide, rand=lambda: 1.0) == pytest.approx(3.0)


def test_retry_after_wins_and_is_capped() -> None:
    assert backoff_delay(1, POLICY, retry_after=7.0) == 7.0
    assert backoff_delay(1, POLICY, retry_after=10_000.0) == MAX_RETRY_AFTER
    error = RateLimited(429, "RATE_LIMIT_EXCEEDED", "", "/p", retry_after=3.0)
    assert retry_after_of(error) == 3.0
    assert retry_after_of(TransientApiError(503, "x", "", "/p")) is None


def test_parse_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("12", now) == 12.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    when = datetime.fromtimestamp(now + 30, tz=UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), now) == pytest.approx(30.0)
    assert parse_retry_after("-4", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
