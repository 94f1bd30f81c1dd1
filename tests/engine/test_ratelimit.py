import asyncio

import pytest

from pipeline.clock import ManualClock
from pipeline.engine.ratelimit import LIMITER_STATS, ImageRateLimiter


async def test_images_within_the_window_pass_and_the_next_waits() -> None:
    clock = ManualClock()
    limiter = ImageRateLimiter(20, clock)
    for _ in range(10):
        await limiter.acquire(2)
    waiting = asyncio.create_task(limiter.acquire(1))
    await asyncio.sleep(0)
    assert not waiting.done() and clock.sleepers == 1
    clock.advance(59.9)
    await asyncio.sleep(0)
    assert not waiting.done()
    clock.advance(0.1)
    await asyncio.wait_for(waiting, 1)


async def test_window_slides_rather_than_resets() -> None:
    clock = ManualClock()
    limiter = ImageRateLimiter(4, clock)
    await limiter.acquire(2)
    clock.advance(30)
    await limiter.acquire(2)
    blocked = asyncio.create_task(limiter.acquire(2))
    clock.advance(30)  # the first two leave the window, the last two stay
    await asyncio.wait_for(blocked, 1)
    assert not asyncio.create_task(limiter.acquire(1)).done()


async def test_first_come_first_served() -> None:
    clock = ManualClock()
    limiter = ImageRateLimiter(2, clock)
    await limiter.acquire(2)
    order: list[str] = []

    async def take(name: str, n: int) -> None:
        await limiter.acquire(n)
        order.append(name)

    big = asyncio.create_task(take("big", 2))
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", 1))
    for _ in range(3):
        clock.advance(60)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(big, small), 1)
    assert order == ["big", "small"]


async def test_a_429_fills_the_window_for_a_while() -> None:
    clock = ManualClock()
    limiter = ImageRateLimiter(10, clock)
    limiter.penalise(5)
    blocked = asyncio.create_task(limiter.acquire(1))
    await asyncio.sleep(0)
    assert not blocked.done()
    clock.advance(5)
    await asyncio.wait_for(blocked, 1)


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ImageRateLimiter(0, ManualClock())


async def test_a_429_after_spending_pauses_only_for_its_delay() -> None:
    # A penalty used to be a back-dated entry appended behind newer ones, so it left the
    # window only with them: one 429 held every generation back for a whole minute.
    clock = ManualClock()
    limiter = ImageRateLimiter(1000, clock)
    await limiter.acquire(1)
    clock.advance(1)
    limiter.penalise(0.5)
    blocked = asyncio.create_task(limiter.acquire(1))
    await asyncio.sleep(0)
    assert not blocked.done()
    clock.advance(0.5)
    await asyncio.wait_for(blocked, 1)


async def test_waits_are_counted_process_wide_with_their_seconds() -> None:
    clock = ManualClock()
    limiter = ImageRateLimiter(2, clock)
    before = (LIMITER_STATS.waits, LIMITER_STATS.wait_seconds)
    await limiter.acquire(2)  # let through at once: no wait
    assert (LIMITER_STATS.waits, LIMITER_STATS.wait_seconds) == before
    first = asyncio.create_task(limiter.acquire(1))
    await asyncio.sleep(0)
    second = asyncio.create_task(limiter.acquire(1))  # queued behind the first
    await asyncio.sleep(0)
    clock.advance(45)
    clock.advance(15)
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    assert LIMITER_STATS.waits - before[0] == 2
    assert LIMITER_STATS.wait_seconds - before[1] == pytest.approx(120)
