"""The client's counts of retries and rate-limit waits, as pure bookkeeping."""

from __future__ import annotations

from pipeline.api.stats import RETRY_REASONS, ApiStats, retry_reason
from pipeline.errors import RateLimited, TooSlow, TransientApiError, TransportError


def test_each_transient_failure_has_a_bounded_reason() -> None:
    failures = [
        RateLimited(429, "RATE_LIMIT_EXCEEDED", "", "/v3/model"),
        TransientApiError(503, "SERVICE_UNAVAILABLE", "", "/v3/model"),
        TransportError("request timed out", path="/v3/model"),
        TooSlow("below the minimum rate", "/upload"),
    ]
    assert [retry_reason(error) for error in failures] == list(RETRY_REASONS)


def test_only_the_waits_after_a_429_count_as_rate_limit_waits() -> None:
    stats = ApiStats()
    stats.retried(RateLimited(429, "RATE_LIMIT_EXCEEDED", "", "/v3/model", retry_after=2), 2.0)
    stats.retried(TransientApiError(502, "BAD_GATEWAY", "", "/v3/model"), 0.5)
    stats.retried(RateLimited(429, "RATE_LIMIT_EXCEEDED", "", "/v3/model"), 1.0)
    assert stats.retries == {"rate_limited": 2, "server_error": 1}
    assert (stats.rate_limit_waits, stats.rate_limit_wait_seconds) == (2, 3.0)
