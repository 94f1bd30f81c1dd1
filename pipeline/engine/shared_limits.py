"""The account's images-per-minute limits shared by every worker through the database.

:class:`SharedRateLimiter` has :class:`~pipeline.engine.ratelimit.ImageRateLimiter`'s
interface (``acquire``, ``penalise``); it counts in the ``rate_window`` table of
:class:`~pipeline.store.coordination.AccountWindow`, so three workers never start more
images in a minute than one would. Within a worker, callers take turns as they do with the
local limiter.
"""

from __future__ import annotations

import asyncio
import hashlib

from ..clock import Clock
from ..config import Settings
from ..store.coordination import AccountWindow
from ..store.postgres import PostgresStore
from .ratelimit import LIMITER_STATS, WINDOW_SECONDS, GenerationLimits

#: Added to the window: an image is counted when its slot is taken, the service counts it
#: when the request arrives, after the intent's transaction and the send (measured up to
#: 0.22 s in the chaos test); dated a second later, a slot freed by the window is free at
#: the service too. Without it the chaos test met two or three 429s a run.
SEND_MARGIN_SECONDS = 1.0


def account_id(settings: Settings) -> str:
    """The account as the window names it: a digest of the API's address and key (the key
    itself is never written anywhere)."""
    key = settings.api_key.get_secret_value() if settings.api_key else ""
    digest = hashlib.sha256(f"lora-pipeline account\0{settings.base_url}\0{key}".encode())
    return digest.hexdigest()[:16]


class SharedRateLimiter:
    """At most ``per_minute`` images of ``endpoint`` started in any window, over all workers."""

    def __init__(self, window: AccountWindow, endpoint: str, per_minute: int, clock: Clock,
                 seconds: float = WINDOW_SECONDS + SEND_MARGIN_SECONDS) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self._window = window
        self._endpoint = endpoint
        self._limit = per_minute
        self._clock = clock
        self._seconds = seconds
        self._turn = asyncio.Lock()

    async def acquire(self, images: int) -> None:
        """Wait until ``images`` more fit in the account's window, then count them."""
        images = min(images, self._limit)
        asked = self._clock.now()
        held = self._turn.locked()
        async with self._turn:
            while (wait := self._window.take(
                self._endpoint, images, limit=self._limit, window=self._seconds,
                now=self._clock.now(),
            )) is not None:
                held = True
                await self._clock.sleep(wait)
        if held:
            LIMITER_STATS.waited(self._clock.now() - asked)

    def penalise(self, seconds: float) -> None:
        """The service said 429: every worker holds back for ``seconds``."""
        self._window.pause(self._endpoint, until=self._clock.now() + seconds)


def shared_limits(store: PostgresStore, settings: Settings, clock: Clock) -> GenerationLimits:
    window = AccountWindow(store, account_id(settings))
    return GenerationLimits(
        txt2img=SharedRateLimiter(window, "txt2img", settings.images_per_minute, clock),
        img2img=SharedRateLimiter(window, "img2img", settings.img2img_images_per_minute, clock),
    )
