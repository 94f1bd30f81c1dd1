"""Turning what the wire gave us into the project's errors: the one place that does it.

The error classes themselves live in :mod:`pipeline.errors`; this module maps HTTP
answers (JSON, the old wrapper, S3 XML, plain text) and aiohttp's exceptions onto them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import aiohttp

from ..errors import (
    ApiError,
    ApiStatusError,
    BadCredentials,
    NotFound,
    PermanentApiError,
    RateLimited,
    TransientApiError,
    TransportError,
    UnsafeUrl,
    UrlExpired,
)
from .retry import RETRYABLE_STATUSES, parse_retry_after

BAD_CREDENTIAL_REASONS = frozenset({"MISSING_API_KEY", "INVALID_API_KEY"})
EDGE_BLOCK_MARKER = "error code: 1010"
MAX_MESSAGE_CHARS = 300
MAX_REASON_CHARS = 80
Scrub = Callable[[str], str]
_XML_FIELD = re.compile(r"<(Code|Message)>(.*?)</\1>", re.DOTALL)


def parse_error_body(
    status: int, body: bytes, scrub: Scrub = str
) -> tuple[str, str]:
    """(reason, message) from any error body the service or its storage may send, each
    scrubbed before it is cut to length (a key cut in half would escape the scrubber)."""
    reason, message = _error_fields(status, body.decode("utf-8", errors="replace").strip())
    return scrub(reason)[:MAX_REASON_CHARS], scrub(message)[:MAX_MESSAGE_CHARS]


def _error_fields(status: int, text: str) -> tuple[str, str]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        reason = str(data.get("reason") or f"HTTP_{status}")
        return reason, str(data.get("message") or data.get("msg") or "")
    fields = dict(_XML_FIELD.findall(text))
    if fields:
        return fields.get("Code", f"HTTP_{status}"), fields.get("Message", "")
    if EDGE_BLOCK_MARKER in text:
        return "EDGE_BLOCKED", (
            "the service's edge refused the request (error code: 1010); "
            "it does this when no User-Agent is sent"
        )
    return f"HTTP_{status}", text


def error_for_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    path: str,
    *,
    now: float,
    scrub: Scrub,
    presigned: bool = False,
) -> ApiStatusError:
    """The error for a non-200 answer, its texts scrubbed (see :mod:`pipeline.redact`).

    Presigned storage never sees our key: its 401 or 403 is about the URL, never a reason
    to stop the whole job as a refused key would.
    """
    reason, message = parse_error_body(status, body, scrub)
    if presigned and status in (401, 403):
        return UrlExpired(status, reason, message or "presigned URL refused or expired", path)
    if not presigned and (status == 401 or reason in BAD_CREDENTIAL_REASONS):
        return BadCredentials(status, reason, message or "the API key was refused", path)
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"), now)
        return RateLimited(status, reason, message, path, retry_after=retry_after)
    if status in RETRYABLE_STATUSES:
        return TransientApiError(status, reason, message, path)
    if status == 404:
        return NotFound(status, reason, message, path)
    return PermanentApiError(status, reason, message, path)


#: Failures that happen before a request is sent: the service never saw it.
_NOT_CONNECTED: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    *((aiohttp.ConnectionTimeoutError,) if hasattr(aiohttp, "ConnectionTimeoutError") else ()),
)


@contextmanager
def translate_transport_errors(path: str, scrub: Scrub) -> Iterator[None]:
    """Re-raise aiohttp's and asyncio's failures as the project's errors.

    A URL aiohttp cannot use is no network blip: :class:`UnsafeUrl`, not retried. Library
    messages quote URLs, so they are scrubbed (queries dropped, the key blanked).
    """
    try:
        yield
    except ApiError:
        raise
    except _NOT_CONNECTED as exc:
        raise TransportError(
            scrub(f"{type(exc).__name__}: {exc}"), path=path, sent=False
        ) from exc
    except TimeoutError as exc:
        raise TransportError("request timed out", path=path) from exc
    except aiohttp.InvalidURL as exc:
        raise UnsafeUrl(scrub(f"not a URL the client can request: {exc}"), path) from exc
    except aiohttp.ClientError as exc:
        raise TransportError(scrub(f"{type(exc).__name__}: {exc}"), path=path) from exc


def unwrap(data: object) -> object:
    """Strip the old ``{"code": 0, "msg": "", "data": {...}}`` wrapper when present."""
    if isinstance(data, dict) and {"code", "data"} <= data.keys() and "task_id" not in data:
        if data.get("code") in (0, "0") and isinstance(data["data"], dict):
            return data["data"]
    return data
