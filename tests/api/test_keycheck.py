"""The key check: a refused key costs one request; an accepted one changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline.api import ApiClient
from pipeline.api.keycheck import accepts_key
from pipeline.emulator import EmulatorHandle
from pipeline.errors import BadCredentials
from tests.conftest import RecordingClock, fast_settings

WRONG_KEY = "sk-wrong-key-0123456789"
#: Calls in flight at once in these tests (within the client's connection limit).
CALLS = 8


def test_which_answers_show_the_key_was_let_through() -> None:
    refused = BadCredentials(403, "INVALID_API_KEY", "invalid API key", "/v3/model")
    assert [accepts_key(status) for status in (200, 400, 404, 422)] == [True] * 4
    assert [accepts_key(status) for status in (401, 403, 429, 500, 503)] == [False] * 5
    assert not accepts_key(400, refused)  # 400 MISSING_API_KEY is a refusal too


async def test_a_refused_key_reaches_the_emulator_once(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    settings = fast_settings(emulator.base_url, tmp_path, api_key=WRONG_KEY)
    clock = RecordingClock()
    async with ApiClient(settings, clock=clock) as api:
        calls = [api.request_upload_url("png") for _ in range(CALLS)]
        calls += [api.training_status("subject", "t1"), api.task_result("g1")]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        later = await asyncio.gather(api.request_upload_url("png"), return_exceptions=True)
    for outcome in outcomes + later:
        assert isinstance(outcome, BadCredentials), outcome
        assert (outcome.status, outcome.reason) == (403, "INVALID_API_KEY")
        assert WRONG_KEY not in str(outcome)
    assert len({id(outcome) for outcome in outcomes}) == len(outcomes)  # one error each
    requests = emulator.emulator.counters_snapshot()["requests"]
    assert sum(requests.values()) == 1, requests
    assert clock.sleeps == []  # nothing retried


@dataclass
class Service:
    """A loopback API whose answers a test scripts and whose requests it watches."""

    #: Status of the n-th answer (200 once the list runs out).
    statuses: list[int] = field(default_factory=list)
    #: Hold the requests after the first until ``CALLS`` of them are in flight together.
    together: bool = True
    arrived: int = 0
    in_flight: int = 0
    peak: int = 0
    first_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release_first: asyncio.Event = field(default_factory=asyncio.Event)
    all_in: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, _request: web.Request) -> web.Response:
        self.arrived += 1
        number = self.arrived
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if number == 1:
                self.first_arrived.set()
                await self.release_first.wait()
            elif not self.together:
                pass
            elif self.in_flight >= CALLS:
                self.all_in.set()
            else:  # held until every call is in: proves they were sent together
                await asyncio.wait_for(self.all_in.wait(), 10)
        finally:
            self.in_flight -= 1
        status = self.statuses[number - 1] if number <= len(self.statuses) else 200
        if status == 403:
            return web.json_response({"reason": "INVALID_API_KEY", "message": "no"}, status=403)
        if status != 200:
            return web.json_response({"reason": "BUSY", "message": "later"}, status=status)
        return web.json_response({"task_id": "t1", "task_status": "TRAINING"})


@pytest.fixture
async def service() -> AsyncIterator[tuple[Service, str]]:
    scripted = Service()
    app = web.Application()
    app.router.add_get("/v3/training/subject", scripted.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield scripted, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_requests_wait_for_the_first_answer_then_flow_together(
    tmp_path: Path, service: tuple[Service, str]
) -> None:
    scripted, base_url = service
    settings = fast_settings(base_url, tmp_path, max_connections=CALLS)
    async with ApiClient(settings, clock=RecordingClock()) as api:
        first = asyncio.create_task(api.training_status("subject", "t1"))
        await scripted.first_arrived.wait()
        others = [asyncio.create_task(api.training_status("subject", "t1"))
                  for _ in range(CALLS)]
        while api.key_check.waiting < CALLS:
            await asyncio.sleep(0)  # let each call reach the check: no time passes
        assert scripted.arrived == 1  # the others wait for the first answer
        scripted.release_first.set()
        await asyncio.gather(first, *others)
        assert api.key_check.accepted
        assert scripted.peak == CALLS  # then all were in flight at once
        await asyncio.gather(*(api.training_status("subject", "t1") for _ in range(CALLS - 1)))
    assert scripted.arrived == 1 + CALLS + CALLS - 1  # and no request was added


async def test_an_answer_that_says_nothing_of_the_key_lets_the_next_one_try(
    tmp_path: Path, service: tuple[Service, str]
) -> None:
    scripted, base_url = service
    scripted.statuses, scripted.together = [503, 403], False
    scripted.release_first.set()
    settings = fast_settings(base_url, tmp_path, max_connections=CALLS)
    async with ApiClient(settings, clock=RecordingClock()) as api:
        outcomes = await asyncio.gather(
            *(api.training_status("subject", "t1") for _ in range(CALLS)), return_exceptions=True
        )
    assert all(isinstance(outcome, BadCredentials) for outcome in outcomes), outcomes
    assert scripted.arrived == 2  # the 503 told nothing; the next try was refused
    assert scripted.peak == 1
