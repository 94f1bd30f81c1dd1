"""The project's one error tree. Every failure a caller can act on is one of these.

    PipelineError
    ├── ConfigError                 bad settings or job file (names the file and field)
    ├── DatasetError                a subject folder that cannot be trained as it is
    ├── StateConflict               the state store disagrees with what was asked
    ├── StoreError                  the state file cannot be used as it is: corrupt, of
    │                               another schema, or missing beside results it made
    ├── LockHeld                    another run holds the job's lock
    ├── UnsafePath                  a write that would leave the subject's outbox folder
    ├── SpendCeilingReached         a paid request that would pass the job's max_spend:
    │                               not sent; the subject waits for a higher ceiling
    └── ApiError                    anything the hosted API (or the way to it) answered
        ├── TransportError          connection refused/reset/dropped, timeouts (transient)
        ├── ApiStatusError          an HTTP error answer: status, reason, message, path
        │   ├── TransientApiError   429, 500, 502, 503, 504: worth retrying later
        │   │   └── RateLimited     429, with the server's Retry-After when it sent one
        │   ├── PermanentApiError   other 4xx/5xx: retrying the same request will not help
        │   │   └── NotFound        404 (TASK_NOT_FOUND, API_NOT_FOUND)
        │   ├── BadCredentials      400 MISSING_API_KEY, 401, 403 INVALID_API_KEY
        │   ├── UrlExpired          403 on a presigned URL (upload PUT, image or model GET)
        │   └── BadResponse         a 2xx whose body cannot be used: not JSON, nested too
        │       │                   deep, not text, an unexpected shape (transient)
        │       ├── TooLarge        an answer, a listing or a file over its bound
        │       ├── TooSlow         a transfer below the minimum throughput (transient)
        │       └── UnsafeUrl       a URL or redirect from the service we refuse to follow
        └── IntegrityError          a download that does not match its advertised hash

Messages never contain the API key: every text from the wire or from a library passes
through :class:`pipeline.redact.Scrubber` before it becomes an error's message.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""


class ConfigError(PipelineError):
    """Settings or a job file are invalid; the message names the file and the field."""


class DatasetError(PipelineError):
    """A subject folder cannot be trained as it is."""


class StateConflict(PipelineError):
    """The state store holds something that contradicts the requested change."""


class StoreError(PipelineError):
    """The state file cannot be used as it is, so nothing is done with it: it is corrupt,
    of a schema this command cannot read, or missing (or empty) beside an outbox that
    already holds results, where a new one would pay for every subject again. The message
    names the file and what to do."""


class StateUnreachable(StoreError):
    """The state database (PostgreSQL) cannot be reached, or the connection to it was lost:
    nothing is wrong with the state, and the next try reconnects."""


class LockHeld(PipelineError):
    """Another run of the same job holds its lock."""


class UnsafePath(PipelineError):
    """A destination under the outbox that is not a plain folder of ours (a link, a file
    where a folder belongs, a name that would climb out): nothing is written there."""


class SpendCeilingReached(PipelineError):
    """A paid request was not sent: it would have passed the job's ``max_spend`` (over all
    passes, or in this one). Nothing was recorded or sent; the subject waits where it is,
    and a pass with a higher ceiling (or, for the per-pass one, the next pass) goes on.
    The message says which ceiling and how to raise it."""


class ApiError(PipelineError):
    """Base of everything that went wrong talking to the API."""

    transient: bool = False


class TransportError(ApiError):
    """The request did not get an HTTP answer (connection error, timeout). ``sent`` is
    False only when the request certainly never reached the service (the connection was
    never made): then a paid create certainly created nothing."""

    transient = True

    def __init__(self, message: str, *, path: str = "", sent: bool = True) -> None:
        super().__init__(f"{message} ({path})" if path else message)
        self.path = path
        self.sent = sent


class ApiStatusError(ApiError):
    """The API answered with an HTTP error."""

    def __init__(self, status: int, reason: str, message: str, path: str) -> None:
        super().__init__(f"{status} {reason}: {message} ({path})")
        self.status = status
        self.reason = reason
        self.message = message
        self.path = path


class TransientApiError(ApiStatusError):
    """An answer that may well succeed on a later try (429, 5xx)."""

    transient = True


class RateLimited(TransientApiError):
    """429: over the account's rate limit."""

    def __init__(
        self, status: int, reason: str, message: str, path: str, retry_after: float | None = None
    ) -> None:
        super().__init__(status, reason, message, path)
        self.retry_after = retry_after


class PermanentApiError(ApiStatusError):
    """An answer that will not change if the same request is sent again."""


class NotFound(PermanentApiError):
    """404: unknown task or path."""


class BadCredentials(ApiStatusError):
    """The API key is missing or wrong: stop at once, retrying will not help."""


class UrlExpired(ApiStatusError):
    """A presigned URL answered 403: it expired or was tampered with; ask for a new one."""


class IntegrityError(ApiError):
    """A downloaded file does not match the hash the API advertised for it."""


class BadResponse(TransientApiError):
    """The service answered 2xx with a body we cannot use. Asking again may help; for a
    paid create the outcome is unknown, never a failure."""

    def __init__(self, message: str, path: str, *, reason: str = "BAD_RESPONSE") -> None:
        super().__init__(200, reason, message, path)


class TooLarge(BadResponse):
    """An answer, a listing or a downloaded file over the bound its setting names."""

    transient = False

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message, path, reason="TOO_LARGE")


class TooSlow(BadResponse):
    """A transfer that stalled or stayed below the minimum throughput."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message, path, reason="TOO_SLOW")


class UnsafeUrl(BadResponse):
    """A URL (or redirect) from the service that is not one we follow: not http(s), a
    downgrade from https, credentials in it, or leaving the API's origin with our key."""

    transient = False

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message, path, reason="UNSAFE_URL")
