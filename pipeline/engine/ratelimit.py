"""Sliding-window limiters for the account's images-per-minute quotas, on an injected clock.

What the limiters held back is counted process-wide in :data:`LIMITER_STATS`, which the
metrics view reads: the limiters are made deep inside a pass, and a watch serves one job.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from ..clock import Clock

WINDOW_SECONDS = 60.0


@dataclass
class LimiterStats:
    """Requests an images-per-minute limiter held back, and the seconds they waited in all
    (on the limiter's clock, from asking until being let through). Totals, never reset."""

    waits: int = 0
    wait_seconds: float = 0.0

    def waited(self, seconds: float) -> None:
        """One request was let through after waiting ``seconds``."""
        self.waits += 1
        self.wait_seconds += max(0.0, seconds)


#: What every limiter of this process held back (any limiter of the pipeline counts here).
LIMITER_STATS = LimiterStats()


class Limiter(Protocol):
    """An images-per-minute limit: this process's (:class:`ImageRateLimiter`) or the
    account's, shared by several workers (:mod:`pipeline.engine.shared_limits`)."""

    async def acquire(self, images: int) -> None: ...
    def penalise(self, seconds: float) -> None: ...


class ImageRateLimiter:
    """At most ``per_minute`` images started in any ``WINDOW_SECONDS``, shared by all tasks.

    Callers are served first come, first served: a big request is not starved by small ones.
    """

    def __init__(self, per_minute: int, clock: Clock, window: float = WINDOW_SECONDS) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self._limit = per_minute
        self._clock = clock
        self._window = window
        self._spent: deque[tuple[float, int]] = deque()
        self._paused_until = 0.0
        self._turn = asyncio.Lock()

    def _in_window(self) -> int:
        horizon = self._clock.now() - self._window
        while self._spent and self._spent[0][0] <= horizon:
            self._spent.popleft()
        return sum(count for _, count in self._spent)

    async def acquire(self, images: int) -> None:
        """Wait until ``images`` more fit in the window, then count them as spent."""
        images = min(images, self._limit)
        asked = self._clock.now()
        held = self._turn.locked()  # queued behind a request that is waiting its turn
        async with self._turn:
            while (wait := self._wait_for(images)) is not None:
                held = True
                await self._clock.sleep(wait)
            self._spent.append((self._clock.now(), images))
        if held:
            LIMITER_STATS.waited(self._clock.now() - asked)

    def _wait_for(self, images: int) -> float | None:
        """Seconds to wait before ``images`` may start; None when they may start now."""
        now = self._clock.now()
        if now < self._paused_until:
            return self._paused_until - now
        if self._in_window() + images <= self._limit:
            return None
        return self._spent[0][0] + self._window - now

    def penalise(self, seconds: float) -> None:
        """The server said 429: start nothing for ``seconds`` more.

        A pause of its own, not a fake entry in the window: the window is kept in time
        order, and an entry dated in the past behind newer ones would only leave it when
        they do, holding every generation back for a whole minute instead of ``seconds``.
        """
        self._paused_until = max(self._paused_until, self._clock.now() + seconds)


@dataclass(frozen=True)
class GenerationLimits:
    """The account's limit of each generation endpoint: txt2img and img2img are limited
    apart (20 and 10 images per minute by default), so each has its own limiter, shared by
    every subject of the pass."""

    txt2img: Limiter
    img2img: Limiter

    def of(self, endpoint: str) -> Limiter:
        """The limiter of ``endpoint`` (``txt2img`` or ``img2img``)."""
        return self.img2img if endpoint == "img2img" else self.txt2img
