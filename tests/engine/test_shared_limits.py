"""The account's images-per-minute limit shared by workers through the database."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import SecretStr

from pipeline.clock import ManualClock
from pipeline.engine.ratelimit import LIMITER_STATS
from pipeline.engine.shared_limits import account_id, shared_limits
from pipeline.store.postgres import PostgresStore
from tests.conftest import closed_after_test, fast_settings


async def test_two_workers_together_start_no_more_than_the_accounts_limit(
    postgres_url: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    settings = fast_settings("http://127.0.0.1:1", tmp_path, images_per_minute=4)
    one, two = (shared_limits(closed_after_test(PostgresStore(postgres_url)), settings, clock)
                for _ in range(2))
    waits_before = LIMITER_STATS.waits
    await one.txt2img.acquire(3)
    await two.txt2img.acquire(1)  # 4 of 4 in the window
    late = asyncio.create_task(two.txt2img.acquire(2))
    other = asyncio.create_task(one.img2img.acquire(2))  # another endpoint's limit
    for _ in range(20):
        await asyncio.sleep(0)
    assert other.done() and not late.done()
    clock.advance(60.5)  # a minute, but not the margin for the request to reach the service
    for _ in range(20):
        await asyncio.sleep(0)
    assert not late.done()
    clock.advance(1)  # the first 3 left the window
    await asyncio.wait_for(late, 1)
    assert LIMITER_STATS.waits > waits_before


async def test_a_429_seen_by_one_worker_holds_the_others_back(
    postgres_url: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    settings = fast_settings("http://127.0.0.1:1", tmp_path)
    one, two = (shared_limits(closed_after_test(PostgresStore(postgres_url)), settings, clock)
                for _ in range(2))
    one.txt2img.penalise(30)
    held = asyncio.create_task(two.txt2img.acquire(1))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not held.done()
    clock.advance(31)
    await asyncio.wait_for(held, 1)


def test_the_account_is_named_by_a_digest_never_the_key(tmp_path: Path) -> None:
    key = "sk-live-0123456789abcdefXYZ"
    settings = fast_settings("https://api.example", tmp_path, api_key=SecretStr(key))
    other = fast_settings("https://api.example", tmp_path,
                          api_key=SecretStr(key + "2"))
    assert account_id(settings) != account_id(other)
    assert key not in account_id(settings) and len(account_id(settings)) == 16
