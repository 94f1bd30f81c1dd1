"""A job file's validation errors as lines a person reads: the file, the field
(``generation.lora_strength``), the bad value, and what is allowed.

    >>> raise config_error("jobs/portraits.toml", exc, JobConfig)  # doctest: +SKIP
    ConfigError: jobs/portraits.toml: generation.lora_strength = 1.5: Input should be less
    than or equal to 1
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ..errors import ConfigError
from .prompts import ENTRY_TAGS

__all__ = ["config_error"]

_VALUE_WIDTH: Final = 80


def config_error(source: str, exc: ValidationError, root: type[BaseModel]) -> ConfigError:
    lines = [line for error in exc.errors(include_url=False) for line in _describe(error, root)]
    return ConfigError("\n".join(f"{source}: {line}" for line in lines))


def _describe(error: ErrorDetails, root: type[BaseModel]) -> list[str]:
    loc = _without_tags(error["loc"])
    field = _dotted(loc)
    if error["type"] == "extra_forbidden":
        return [f"{field} = {_show(error['input'])}: unknown field{_field_hint(root, loc)}"]
    if error["type"] == "missing":
        return [f"{field}: required, missing"]
    message = error["msg"].removeprefix("Value error, ")
    if not loc or isinstance(error["input"], dict):
        # A check over a whole section: its message names the fields itself.
        prefix = f"{field}: " if field else ""
        return [prefix + line for line in message.splitlines()]
    return [f"{field} = {_show(error['input'])}: {message}"]


def _without_tags(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """``loc`` without the names pydantic gives the kinds of a prompt entry (a text or a
    table): ``generation.prompts[1].strength``, not ``...[1].table.strength``."""
    return tuple(part for n, part in enumerate(loc)
                 if not (part in ENTRY_TAGS and n and isinstance(loc[n - 1], int)))


def _dotted(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.isidentifier():
            text += f".{part}" if text else part
        elif part == "[key]":
            text += " (key)"
        else:
            text += f"[{part!r}]"
    return text


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 3] + "..."


def _field_hint(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        model = _model_in(info.annotation) if info is not None else None
    if model is None:
        return ""
    allowed = [name for name, info in model.model_fields.items() if not info.exclude]
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"; {hint}allowed fields: {', '.join(allowed)}"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``X``, ``X | None`` or ``list[X]``, if any."""
    if isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias):
        return annotation if issubclass(annotation, BaseModel) else None
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
