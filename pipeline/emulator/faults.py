"""Request-level fault injection: 429s, 5xx, dropped connections, slow answers.

One roll of the fault RNG per eligible request picks at most one fault, with the odds of
the config (``fault_429``, ``fault_5xx``, ``fault_drop``, ``fault_slow``, taken in that
order). What each does:

- ``429`` and ``5xx`` answer at once, before the handler runs: nothing happens server side.
  A share ``fault_429_retry_after`` of the 429s carry ``Retry-After: 1``. The 5xx status is
  one of 500/502/503/504. ``/v3`` routes get JSON error bodies, presigned URLs get XML.
- ``drop`` runs the handler (its side effect happens: an upload is stored, a training is
  created) and then closes the connection before, during or after the status line and
  headers, or half-way through the body: the client's answer is lost.
- ``slow`` runs the handler and then waits ``slow_seconds`` of real time before answering.

Eligible: every named ``/v3`` and ``/_s3`` route, or only those in ``fault_routes``, given
either as route names (``"POST /v3/async/txt2img"``) or as paths (``"/v3/async/txt2img"``).
Never ``/_emulator``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from aiohttp import web

from .config import EmulatorConfig
from .errors import json_error, xml_error

_5XX = (500, 502, 503, 504)
_JSON_REASONS = {502: "BAD_GATEWAY", 503: "SERVICE_UNAVAILABLE", 504: "GATEWAY_TIMEOUT"}
_XML_CODES = {500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable",
              504: "GatewayTimeout"}
DROP_MODES = ("before", "headers", "body")


@dataclass(frozen=True)
class Fault:
    """One injected fault: ``kind`` is ``429``, ``5xx``, ``drop`` or ``slow``."""

    kind: str
    status: int = 0
    retry_after: bool = False
    drop_mode: str = ""


def route_selected(route: str, routes: list[str] | None) -> bool:
    """Whether faults may hit ``route`` ("METHOD /path") under ``fault_routes``."""
    if routes is None:
        return True
    path = route.split(" ", 1)[-1]
    return route in routes or path in routes


def decide(config: EmulatorConfig, rng: random.Random, route: str) -> Fault | None:
    """Roll for a fault on one request to ``route``."""
    if not route_selected(route, config.fault_routes):
        return None
    roll = rng.random()
    threshold = config.fault_429
    if roll < threshold:
        return Fault("429", 429, retry_after=rng.random() < config.fault_429_retry_after)
    threshold += config.fault_5xx
    if roll < threshold:
        return Fault("5xx", rng.choice(_5XX))
    threshold += config.fault_drop
    if roll < threshold:
        return Fault("drop", drop_mode=rng.choice(DROP_MODES))
    threshold += config.fault_slow
    if roll < threshold:
        return Fault("slow")
    return None


def error_answer(fault: Fault, method: str, api: bool) -> web.Response:
    """The immediate answer of a ``429`` or ``5xx`` fault."""
    headers = {"Retry-After": "1"} if fault.retry_after else None
    if fault.status == 429:
        if api:
            return json_error(429, "RATE_LIMIT_EXCEEDED", "too many requests (injected)", headers)
        return xml_error(429, "SlowDown", "Please reduce your request rate.", headers)
    if not api:
        return xml_error(fault.status, _XML_CODES[fault.status], "injected storage error")
    reason = _JSON_REASONS.get(fault.status)
    if reason is None:
        reason = "CREATE_TASK_FAILED" if method == "POST" else "GET_RESULT_FAILED"
    return json_error(fault.status, reason, "internal error (injected)")


def drop_connection(request: web.Request, answer: web.StreamResponse, mode: str) -> None:
    """Close the client's connection after sending part of ``answer`` (per ``mode``)."""
    transport = request.transport
    if transport is None:
        return
    body = answer.body if isinstance(answer, web.Response) else b""
    raw = body if isinstance(body, bytes) else b""
    head = (
        f"HTTP/1.1 {answer.status} {answer.reason}\r\n"
        f"Content-Type: {answer.content_type}\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n"
    ).encode()
    if mode == "body" and raw:
        transport.write(head + raw[: len(raw) // 2])
    elif mode != "before":  # "headers", or "body" of an empty answer
        transport.write(head[: len(head) // 2])
    transport.close()
