"""Reading request fields the way the service does: strict on known fields, blind to others.

``null`` counts as absent; ints and numbers may arrive as JSON strings (the official SDK
sends ``learning_rate`` as ``"1e-4"``); booleans are never numbers. Every failure is a 400
``INVALID_REQUEST_BODY`` whose message names the field by its dotted path.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from .errors import invalid

JsonObject = dict[str, Any]


async def read_json_object(request: web.Request) -> JsonObject:
    """The request body as a JSON object, or 400."""
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    return body


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def get_object(obj: JsonObject, key: str, path: str = "") -> JsonObject | None:
    """An optional nested object."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(f"{_join(path, key)} must be an object")
    return value


def get_list(obj: JsonObject, key: str, path: str = "") -> list[Any] | None:
    """An optional array."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise invalid(f"{_join(path, key)} must be an array")
    return value


def get_str(
    obj: JsonObject,
    key: str,
    path: str = "",
    *,
    required: bool = False,
    min_len: int = 1,
    max_len: int | None = None,
) -> str | None:
    """An optional (or required) string of ``min_len..max_len`` characters."""
    name = _join(path, key)
    value = obj.get(key)
    if value is None:
        if required:
            raise invalid(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string")
    if len(value) < min_len or (max_len is not None and len(value) > max_len):
        bound = f"{min_len}..{max_len}" if max_len is not None else f"at least {min_len}"
        raise invalid(f"{name} must be {bound} characters long, got {len(value)}")
    return value


def require_str(obj: JsonObject, key: str, path: str = "", *, max_len: int | None = None) -> str:
    """A required non-empty string."""
    value = get_str(obj, key, path, required=True, max_len=max_len)
    assert value is not None
    return value


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"in {low:g}..{high:g}"
    if low is not None:
        return f">= {low:g}"
    return f"<= {high:g}"


def get_int(
    obj: JsonObject,
    key: str,
    path: str = "",
    *,
    required: bool = False,
    low: int | None = None,
    high: int | None = None,
) -> int | None:
    """An optional integer in ``low..high``; integral floats and digit strings are accepted."""
    name = _join(path, key)
    value = obj.get(key)
    if value is None:
        if required:
            raise invalid(f"{name} is required")
        return None
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None:
        raise invalid(f"{name} must be an integer")
    if (low is not None and number < low) or (high is not None and number > high):
        raise invalid(f"{name} must be an integer {_range_text(low, high)}, got {number}")
    return number


def require_int(
    obj: JsonObject, key: str, path: str = "", *, low: int | None = None, high: int | None = None
) -> int:
    """A required integer in ``low..high``."""
    value = get_int(obj, key, path, required=True, low=low, high=high)
    assert value is not None
    return value


def get_number(
    obj: JsonObject,
    key: str,
    path: str = "",
    *,
    required: bool = False,
    low: float | None = None,
    high: float | None = None,
    exclusive_low: bool = False,
) -> float | None:
    """An optional finite number in ``low..high`` (``low`` excluded if ``exclusive_low``)."""
    name = _join(path, key)
    value = obj.get(key)
    if value is None:
        if required:
            raise invalid(f"{name} is required")
        return None
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise invalid(f"{name} must be a number")
    too_low = low is not None and (number <= low if exclusive_low else number < low)
    if too_low or (high is not None and number > high):
        bound = f"> {low:g}" if exclusive_low and high is None else _range_text(low, high)
        raise invalid(f"{name} must be a number {bound}, got {number:g}")
    return number


def require_number(
    obj: JsonObject, key: str, path: str = "", *, low: float | None = None,
    high: float | None = None,
) -> float:
    """A required number in ``low..high``."""
    value = get_number(obj, key, path, required=True, low=low, high=high)
    assert value is not None
    return value


def get_bool(obj: JsonObject, key: str, path: str = "") -> bool | None:
    """An optional boolean (``"true"``/``"false"`` strings accepted)."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid(f"{_join(path, key)} must be a boolean")


def get_choice(
    obj: JsonObject, key: str, choices: frozenset[str] | tuple[str, ...], path: str = "",
    *, required: bool = False,
) -> str | None:
    """An optional string that must be one of ``choices``."""
    value = get_str(obj, key, path, required=required)
    if value is not None and value not in choices:
        allowed = ", ".join(sorted(choices))
        raise invalid(f"{_join(path, key)} must be one of: {allowed}; got {value!r}")
    return value
