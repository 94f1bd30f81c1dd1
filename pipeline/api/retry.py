"""When and how long to wait before trying again: pure functions, no I/O.

Only idempotent calls go through here (reads, the presigned PUT, the upload-URL call).
Creating a training or a generation is never retried blindly: a second POST is a second
paid task, so the caller checks the server first.

:func:`backoff_delay` is the project's one exponential backoff: the API client, the
training and generation stages, the ``[on_complete]`` notifications, the restarts of
supervised tasks and the emulator's webhooks each pass it their own :class:`RetryPolicy`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from ..errors import ApiError, RateLimited

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_BASE_DELAY = 0.5
DEFAULT_MAX_DELAY = 30.0
#: A server's Retry-After is honoured up to this many seconds; beyond it we back off anyway.
MAX_RETRY_AFTER = 60.0
JITTER_FRACTION = 0.25
#: More doublings than this change nothing (every cap is reached long before) and would
#: overflow a float: a task restarted for days keeps asking for its delay.
MAX_DOUBLINGS = 64


@dataclass(frozen=True)
class RetryPolicy:
    """How many tries and how long between them.

    ``jitter`` spreads each delay by up to that fraction either way, so that many clients
    failing together do not all come back at the same instant; a policy with a single
    caller (one webhook, one restarted task) can do without it (``jitter=0``).
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    base_delay: float = DEFAULT_BASE_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    jitter: float = JITTER_FRACTION


def should_retry(error: BaseException, attempt: int, policy: RetryPolicy) -> bool:
    """True when ``error`` is transient and try number ``attempt`` (1-based) was not the last."""
    if attempt >= policy.max_attempts:
        return False
    return isinstance(error, ApiError) and error.transient


def backoff_delay(
    attempt: int,
    policy: RetryPolicy,
    *,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failed try number ``attempt`` (1-based).

    Exponential (base * 2**(attempt-1)), capped at ``max_delay``, spread by up to
    ``policy.jitter`` either way. A server-sent Retry-After wins when present, capped at
    ``MAX_RETRY_AFTER``.

    >>> [backoff_delay(n, RetryPolicy(base_delay=1.0, jitter=0.0)) for n in (1, 2, 3, 10)]
    [1.0, 2.0, 4.0, 30.0]
    """
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, MAX_RETRY_AFTER)
    doublings = min(attempt - 1, MAX_DOUBLINGS)
    exponential: float = min(policy.base_delay * 2.0**doublings, policy.max_delay)
    return exponential * (1 - policy.jitter + 2 * policy.jitter * rand())


def retry_after_of(error: BaseException) -> float | None:
    """The server's requested wait, when the error carries one."""
    if isinstance(error, RateLimited):
        return error.retry_after
    return None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
