"""Logging: structlog, readable on a terminal, JSON lines when not (cron), key redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

from .config import Settings

REDACTED = "***"


class Redactor:
    """A processor that replaces every occurrence of a secret in an event, tracebacks too."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = [s for s in secrets if s]

    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if self._secrets:
            for key, value in event.items():
                event[key] = self._scrub(value)
        return event

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        if isinstance(value, BaseException):
            return self._scrub(f"{type(value).__name__}: {value}")
        return value


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
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            Redactor([secret]),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[settings.log_level.upper()]
        ),
        logger_factory=lambda *_: structlog.PrintLogger(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
