"""A hostile stand-in of the hosted API: it speaks the contract (every request is answered by
the project's emulator behind it) and lies where a test tells it to.

    async with serve_hostile(emulator) as hostile:
        hostile.rewrite_json(r"^/v3/async/task-result$", lambda data: ...)
        hostile.serve(r"^/evil/lora$", endless_body)
        settings = fast_settings(hostile.base_url, ...)

Rules see the emulator's parsed JSON answer and return what the client gets instead; a
served route answers without the emulator. Every request is recorded with whether it
carried an Authorization header, and the last key seen is kept so a rule can echo it.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from pipeline.emulator import EmulatorHandle

JsonRule = Callable[[Any], Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


@dataclass
class Seen:
    method: str
    path: str
    authorized: bool


@dataclass
class Hostile:
    upstream: EmulatorHandle
    base_url: str = ""
    seen: list[Seen] = field(default_factory=list)
    key: str = ""
    _json_rules: list[tuple[re.Pattern[str], str, JsonRule]] = field(default_factory=list)
    _routes: list[tuple[re.Pattern[str], Handler]] = field(default_factory=list)
    #: Names swapped in answers, swapped back in requests (so the emulator still agrees).
    _aliases: dict[str, str] = field(default_factory=dict)

    def rewrite_json(self, path: str, rule: JsonRule, *, method: str = "GET") -> None:
        """Answers of ``method path`` (a regex on the path) pass through ``rule``."""
        self._json_rules.append((re.compile(path), method, rule))

    def serve(self, path: str, handler: Handler) -> None:
        """Answer ``path`` (a regex) with ``handler``, without the emulator."""
        self._routes.append((re.compile(path), handler))

    def clear(self) -> None:
        self._json_rules.clear()
        self._routes.clear()

    def alias(self, real: str, shown: str) -> str:
        """Show ``real`` as ``shown`` to the client; ``shown`` sent back becomes ``real``."""
        self._aliases[shown] = real
        return shown

    def count(self, method: str, path: str) -> int:
        return sum(1 for s in self.seen if s.method == method and re.search(path, s.path))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization", "")
        self.seen.append(Seen(request.method, request.path, bool(authorization)))
        if authorization.startswith("Bearer "):
            self.key = authorization.removeprefix("Bearer ")
        for pattern, handler in self._routes:
            if pattern.search(request.path):
                return await handler(request)
        body = await request.read()
        for shown, real in self._aliases.items():
            body = body.replace(json.dumps(shown)[1:-1].encode(), real.encode())
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        headers["Host"] = request.host  # the emulator signs URLs for the host it was asked by
        async with aiohttp.ClientSession() as session, session.request(
            request.method, self.upstream.base_url + request.path_qs, headers=headers,
            data=body or None, allow_redirects=False,
        ) as answer:
            payload = await answer.read()
            content_type = answer.headers.get("Content-Type", "")
            status = answer.status
        rules = [r for p, m, r in self._json_rules if m == request.method and p.search(request.path)]
        if rules and status == 200 and "json" in content_type:
            data = json.loads(payload)
            for rule in rules:
                data = rule(data)
            text = data if isinstance(data, str) else json.dumps(data)
            return web.Response(text=text, content_type="application/json")
        return web.Response(body=payload, status=status,
                            headers={"Content-Type": content_type} if content_type else None)


@contextlib.asynccontextmanager
async def serve_hostile(upstream: EmulatorHandle) -> AsyncIterator[Hostile]:
    hostile = Hostile(upstream)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", hostile._handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hostile.base_url = f"http://127.0.0.1:{port}"
    try:
        yield hostile
    finally:
        await runner.cleanup()


def each_model(data: Any, change: Callable[[dict[str, Any]], None]) -> Any:
    """Apply ``change`` to every model entry of a training status, task list or model list."""
    entries: list[dict[str, Any]] = []
    entries += data.get("models") or []
    for task in data.get("tasks") or []:
        entries += task.get("models") or []
    for entry in entries:
        change(entry)
    return data


async def endless(request: web.Request, *, chunk: bytes = b"\0" * 65536,
                  total: int = 8 * 1024 * 1024, declared: int | None = None) -> web.StreamResponse:
    """``total`` bytes of ``chunk``s, optionally announcing ``declared`` as Content-Length."""
    response = web.StreamResponse()
    if declared is not None:
        response.content_length = declared
    await response.prepare(request)
    sent = 0
    with contextlib.suppress(ConnectionError):
        while sent < total:
            await response.write(chunk)
            sent += len(chunk)
    return response
