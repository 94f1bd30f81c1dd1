"""A sliding-window limiter for the account's images-per-minute quota, on an injected clock."""

from __future__ import annotations

import asyncio
from collections import deque

from .clock import Clock

WINDOW_SECONDS = 60.0


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
        self._turn = asyncio.Lock()

    def _in_window(self) -> int:
        horizon = self._clock.now() - self._window
        while self._spent and self._spent[0][0] <= horizon:
            self._spent.popleft()
        return sum(count for _, count in self._spent)

    async def acquire(self, images: int) -> None:
        """Wait until ``images`` more fit in the window, then count them as spent."""
        images = min(images, self._limit)
        async with self._turn:
            while self._in_window() + images > self._limit:
                oldest = self._spent[0][0]
                await self._clock.sleep(oldest + self._window - self._clock.now())
            self._spent.append((self._clock.now(), images))

    def penalise(self, seconds: float) -> None:
        """The server said 429: count the window as full for ``seconds`` more."""
        self._spent.append((self._clock.now() + seconds - self._window, self._limit))
