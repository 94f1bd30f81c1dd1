"""What happens around every handler, outermost first.

1. traffic: counts the request by route name (``"POST /v3/training/subject"``), adds the
   configured latency, injects request-level faults (see :mod:`.faults`), counts answers;
2. errors: turns :class:`ApiError` (JSON) and :class:`S3Error` (XML) into answers;
3. gate: the edge and the API gateway: no User-Agent -> 403 ``error code: 1010`` (plain
   text), unknown path -> 404 ``API_NOT_FOUND``, then the API key on ``/v3``
   (missing -> 400 ``MISSING_API_KEY``, not accepted -> 403 ``INVALID_API_KEY``).

Presigned URLs (``/_s3/...``) skip the gate; ``/_emulator/...`` skips latency and faults.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler

from .core import EMULATOR_KEY
from .errors import ApiError, S3Error, edge_block, json_error
from .faults import decide, drop_connection, error_answer

ACCOUNT_KEY = web.RequestKey("account", str)
S3_PREFIX = "/_s3/"
INTERNAL_PREFIX = "/_emulator/"


def zone_of(path: str) -> str:
    """``api``, ``s3`` (presigned URLs) or ``internal`` (``/_emulator``)."""
    if path.startswith(S3_PREFIX):
        return "s3"
    if path.startswith(INTERNAL_PREFIX):
        return "internal"
    return "api"


def route_name(request: web.Request) -> str | None:
    """``"METHOD /canonical/path"`` of the matched route, or None when nothing matched."""
    info = request.match_info
    if info.http_exception is not None:
        return None
    resource = info.route.resource
    if resource is None:
        return None
    return f"{request.method} {resource.canonical}"


@web.middleware
async def traffic_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counting, latency and fault injection."""
    emulator = request.app[EMULATOR_KEY]
    counters, config = emulator.counters, emulator.config
    route = route_name(request)
    zone = zone_of(request.path)
    counters.requests[route or "unknown"] += 1
    if zone == "internal":
        return await handler(request)
    if config.latency > 0:
        await asyncio.sleep(config.latency)
    fault = decide(config, emulator.fault_rng, route) if route else None
    if fault is not None and fault.kind in ("429", "5xx"):
        counters.faults_injected[fault.kind] += 1
        answer: web.StreamResponse = error_answer(fault, request.method, zone == "api")
    else:
        answer = await handler(request)
    counters.responses[str(answer.status)] += 1
    if fault is not None and fault.kind == "drop":
        counters.faults_injected["drop"] += 1
        drop_connection(request, answer, fault.drop_mode)
    elif fault is not None and fault.kind == "slow":
        counters.faults_injected["slow"] += 1
        await asyncio.sleep(config.slow_seconds)
    return answer


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Error answers in the shape of the part of the service that gives them."""
    try:
        return await handler(request)
    except (ApiError, S3Error) as error:
        return error.response()
    except web.HTTPException as error:
        if error.status < 400:
            raise
        reason = "INVALID_REQUEST_BODY" if error.status < 500 else "INTERNAL_ERROR"
        return json_error(error.status, reason, error.text or error.reason)


def _authenticate(request: web.Request, accepted: list[str]) -> str:
    header = request.headers.get("Authorization", "").strip()
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if not header or (scheme.lower() == "bearer" and not token):
        raise ApiError(400, "MISSING_API_KEY", "missing API key: send Authorization: Bearer <key>")
    if scheme.lower() != "bearer" or (accepted and token not in accepted):
        raise ApiError(403, "INVALID_API_KEY", "invalid API key")
    return token


@web.middleware
async def gate_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """User-Agent, unknown paths and the API key."""
    zone = zone_of(request.path)
    unmatched = request.match_info.http_exception is not None
    if zone == "s3":
        if unmatched:
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.")
        return await handler(request)
    if zone == "api" and not request.headers.get("User-Agent"):
        return edge_block()
    if unmatched:
        raise ApiError(404, "API_NOT_FOUND", f"{request.method} {request.path} is not an API")
    if zone == "api":
        accepted = request.app[EMULATOR_KEY].config.api_keys
        request[ACCOUNT_KEY] = _authenticate(request, accepted)
    return await handler(request)
