"""Webhook delivery of generation results to a local receiver (contract §7)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from .conftest import EnvFactory, txt2img_body


@dataclass
class Receiver:
    """A webhook endpoint answering ``statuses`` in turn (then 200)."""

    statuses: list[int] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    delivered: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append(await request.json())
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            self.delivered.set()
        return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    server = TestServer(app)
    await server.start_server()
    hook.url = str(server.make_url("/hook"))
    yield hook
    await server.close()


def _with_webhook(url: str) -> dict[str, Any]:
    body = txt2img_body()
    body["extra"]["webhook"] = {"url": url, "test_mode": {"enabled": False}}
    return body


async def test_webhook_delivered_when_the_task_ends(
    make_env: EnvFactory, receiver: Receiver
) -> None:
    env = await make_env()
    status, answer = await env.call("POST", "/v3/async/txt2img", json=_with_webhook(receiver.url))
    assert status == 200
    await asyncio.sleep(0)  # let the timer start
    env.clock.advance(3)
    await asyncio.wait_for(receiver.delivered.wait(), 5)
    [call] = receiver.calls
    assert call["event_type"] == "ASYNC_TASK_RESULT"
    payload = call["payload"]
    assert payload["task"]["task_id"] == answer["task_id"]
    assert payload["task"]["status"] == "TASK_STATUS_SUCCEED"
    assert len(payload["images"]) == 1 and payload["images"][0]["image_url"].startswith(
        str(env.client.make_url("/")).rstrip("/"))
    async with env.session.get(payload["images"][0]["image_url"]) as got:
        assert got.status == 200
    await env.result(answer["task_id"])  # a poll afterwards sends nothing more
    await asyncio.sleep(0.05)
    assert len(receiver.calls) == 1
    assert env.emulator.counters.webhooks_delivered == 1


async def test_webhook_retried_on_non_2xx(make_env: EnvFactory, receiver: Receiver) -> None:
    env = await make_env(webhook_retry_delay=0.01, fault_generation_failed=1.0)
    receiver.statuses = [500, 503]
    await env.call("POST", "/v3/async/txt2img", json=_with_webhook(receiver.url))
    env.clock.advance(3)
    await env.result(next(iter(env.emulator.generations)))  # a poll observes the end first
    await asyncio.wait_for(receiver.delivered.wait(), 5)
    assert len(receiver.calls) == 3
    assert receiver.calls[-1]["payload"]["task"]["status"] == "TASK_STATUS_FAILED"
    assert env.emulator.counters.webhooks_delivered == 1


async def test_webhook_given_up_after_retries(make_env: EnvFactory, receiver: Receiver) -> None:
    env = await make_env(webhook_retry_delay=0.01, webhook_retries=2)
    receiver.statuses = [500] * 10
    await env.call("POST", "/v3/async/txt2img", json=_with_webhook(receiver.url))
    env.clock.advance(3)
    for _ in range(200):
        if env.emulator.counters.webhooks_failed:
            break
        await asyncio.sleep(0.01)
    assert len(receiver.calls) == 3
    assert env.emulator.counters.webhooks_failed == 1
