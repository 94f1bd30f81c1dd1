"""Opaque pagination cursors, as the service hands them out and as the SDK forges them.

The task list answers ``c_<offset>`` (``c_10``); the model list answers a base64 form
(``c_WzIwLCIxMTQ2MTkiXQ==``, a JSON ``[offset, last id]``). Both forms are accepted on
both lists, since the official SDK builds ``c_<offset>`` cursors itself. The last page
has an empty ``next_cursor``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import TypeVar

from .errors import invalid

T = TypeVar("T")
DEFAULT_LIMIT = 10


def parse_limit(raw: str | None, maximum: int) -> int:
    """``pagination.limit``: absent means :data:`DEFAULT_LIMIT`; else 1..maximum or 400."""
    if raw is None or raw == "":
        return min(DEFAULT_LIMIT, maximum)
    try:
        limit = int(raw)
    except ValueError as exc:
        raise invalid(f"pagination.limit must be an integer, got {raw!r}") from exc
    if not 1 <= limit <= maximum:
        raise invalid(f"pagination.limit must be in 1..{maximum}, got {limit}")
    return limit


def parse_cursor(raw: str | None) -> int:
    """The offset a cursor points at (0 for an absent or empty cursor), or 400."""
    if not raw:
        return 0
    body = raw.removeprefix("c_")
    if body.isdigit():
        return int(body)
    try:
        decoded = json.loads(base64.urlsafe_b64decode(body.encode()))
    except (binascii.Error, ValueError) as exc:
        raise invalid(f"pagination.cursor {raw!r} is not a valid cursor") from exc
    if isinstance(decoded, list) and decoded and isinstance(decoded[0], int) and decoded[0] >= 0:
        return decoded[0]
    raise invalid(f"pagination.cursor {raw!r} is not a valid cursor")


def offset_cursor(offset: int) -> str:
    """The short form, ``c_<offset>``."""
    return f"c_{offset}"


def opaque_cursor(offset: int, last_key: str) -> str:
    """The base64 form."""
    raw = json.dumps([offset, last_key], separators=(",", ":")).encode()
    return "c_" + base64.urlsafe_b64encode(raw).decode()


def page(items: Sequence[T], offset: int, limit: int) -> tuple[list[T], int | None]:
    """The slice at ``offset`` and the next offset (None on the last page)."""
    chunk = list(items[offset : offset + limit])
    following = offset + limit
    return chunk, following if following < len(items) else None
