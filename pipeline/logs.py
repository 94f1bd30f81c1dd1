"""Logging: structlog, readable on a terminal, JSON lines when not (cron), key redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

from .config import Settings
from .redact import REDACTED, Scrubber
from .views.textsafe import printable

__all__ = ["REDACTED", "Redactor", "configure_logging"]


class Redactor:
    """A structlog processor: every value of an event through the run's :class:`Scrubber`
    (the key, URL queries, lone surrogates), exceptions and tracebacks included."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._scrubber = Scrubber(secrets)

    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event.items():
            event[key] = self._scrubber.value(value)
        return event


def _printable_values(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """On a terminal, control characters from outside (folder names, the service's words)
    are spelt as escapes; a traceback keeps its line breaks. JSON lines escape them anyway."""
    for key, value in event.items():
        if isinstance(value, str):
            lines = value.split("\n") if key == "exception" else [value]
            event[key] = "\n".join(printable(part) for part in lines)
    return event


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Set structlog up once, for the whole process; logs go to ``stream`` (default: the
    current ``sys.stderr``, looked up at each call so redirection keeps working)."""
    target = stream or sys.stderr
    mode = settings.log_format
    if mode == "auto":
        mode = "console" if target.isatty() else "json"
    secret = settings.api_key.get_secret_value() if settings.api_key else ""
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=target.isatty())
        if mode == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,  # the job and pass id of a pass
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            Redactor([secret]),
            *([_printable_values] if mode == "console" else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[settings.log_level.upper()]
        ),
        logger_factory=lambda *_: structlog.PrintLogger(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
