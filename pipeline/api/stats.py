"""What the API client retried and waited for: counts the metrics view reads.

    api.stats.retries["rate_limited"]   # tries sent again after a 429
    api.stats.rate_limited              # 429 answers, to any request of the client
    api.stats.rate_limit_wait_seconds   # seconds waited out before trying again after them
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..errors import BadResponse, RateLimited, TransportError

#: Why a try was sent again: every value :func:`retry_reason` gives, for a bounded label.
RETRY_REASONS = ("rate_limited", "server_error", "transport", "bad_response")


def retry_reason(error: BaseException) -> str:
    """Which of :data:`RETRY_REASONS` a transient ``error`` is: a 429, a 5xx, no answer
    (connection refused, reset or dropped, a timeout), or a 2xx that could not be used
    (including a transfer too slow)."""
    if isinstance(error, RateLimited):
        return "rate_limited"
    if isinstance(error, TransportError):
        return "transport"
    if isinstance(error, BadResponse):
        return "bad_response"
    return "server_error"


@dataclass
class ApiStats:
    """Running totals of one client, updated on its event loop and read (whole numbers,
    never reset) by the metrics view's thread."""

    #: Tries sent again, by :func:`retry_reason`.
    retries: Counter[str] = field(default_factory=Counter)
    #: 429 answers, whether the client retried them or its caller did (a paid create).
    rate_limited: int = 0
    #: Waits of the client before trying again after a 429, and their seconds in all.
    rate_limit_waits: int = 0
    rate_limit_wait_seconds: float = 0.0

    def retried(self, error: BaseException, delay: float) -> None:
        """A try failed with ``error`` and is sent again after ``delay`` seconds."""
        reason = retry_reason(error)
        self.retries[reason] += 1
        if reason == "rate_limited":
            self.rate_limit_waits += 1
            self.rate_limit_wait_seconds += delay
