"""Bounded reads of what the service sends: answers, error bodies and transfers.

Every limit is a setting (see README "Security"); a breach raises one of the project's
errors, which the stages record on the subject.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import aiohttp

from ..errors import BadResponse, TooLarge, TooSlow

CHUNK_SIZE = 256 * 1024
#: Error bodies are only read for their reason and message: the rest is dropped.
MAX_ERROR_BODY_BYTES = 64 * 1024


def _over(what: str, limit: int, path: str, setting: str) -> TooLarge:
    return TooLarge(f"{what} is over {limit} bytes (LORA_{setting.upper()})", path)


async def read_capped(
    response: aiohttp.ClientResponse, limit: int, path: str, *, setting: str
) -> bytes:
    """The whole body, or :class:`TooLarge` as soon as it passes ``limit`` bytes."""
    if response.content_length is not None and response.content_length > limit:
        raise _over("the answer", limit, path, setting)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(CHUNK_SIZE):
        size += len(chunk)
        if size > limit:
            raise _over("the answer", limit, path, setting)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_error_body(response: aiohttp.ClientResponse) -> bytes:
    """At most :data:`MAX_ERROR_BODY_BYTES` of an error answer; the rest is not read."""
    return await response.content.read(MAX_ERROR_BODY_BYTES)


def parse_json(raw: bytes, path: str) -> object:
    """JSON that the rest of the program can use, or :class:`BadResponse`.

    Refused: bytes that are not UTF-8, syntax errors, nesting deep enough to exhaust the
    parser's recursion, and lone surrogates (``"\\ud800"`` parses, but can be neither
    stored nor written as UTF-8 later).
    """
    try:
        data = json.loads(raw.decode("utf-8"))
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeError as exc:
        raise BadResponse("the answer holds text that is not valid Unicode", path) from exc
    except RecursionError as exc:
        raise BadResponse("the answer is nested too deeply to be read", path) from exc
    except ValueError as exc:
        raise BadResponse("the answer is not JSON", path) from exc
    return data


class Throughput:
    """Refuses a transfer that averages less than ``min_rate`` bytes per second over any
    ``window`` seconds (a trickle that never trips the socket's read timeout)."""

    def __init__(
        self, now: Callable[[], float], *, min_rate: int, window: float, path: str
    ) -> None:
        self._now = now
        self._min_rate = min_rate
        self._window = window
        self._path = path
        self._start = now()
        self._bytes = 0

    def add(self, count: int) -> None:
        self._bytes += count
        if self._min_rate <= 0:
            return
        now = self._now()
        elapsed = now - self._start
        if elapsed < self._window:
            return
        rate = self._bytes / elapsed
        if rate < self._min_rate:
            raise TooSlow(
                f"the transfer ran at {rate:.0f} bytes/s over {elapsed:.0f} s, below the "
                f"minimum of {self._min_rate} (LORA_TRANSFER_MIN_BYTES_PER_SECOND)", self._path,
            )
        self._start, self._bytes = now, 0
