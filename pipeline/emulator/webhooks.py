"""Webhook delivery for generation tasks (contract §7).

When a task carries ``extra.webhook.url``, the emulator POSTs
``{"event_type": "ASYNC_TASK_RESULT", "payload": <task-result body>}`` there once the task
ends: from a background timer on the emulator's clock, or earlier if a poll observes the end
first; at most once per task. Each attempt has ``webhook_timeout`` seconds; non-2xx answers
and connection errors are retried up to ``webhook_retries`` times, ``webhook_retry_delay``
real seconds apart (doubling). Best effort: a receiver that never answers 2xx is given up on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import aiohttp

from pipeline.api.retry import RetryPolicy, backoff_delay

from .store import Generation, generation_times

if TYPE_CHECKING:
    from .core import Emulator

log = logging.getLogger(__name__)
EVENT_TYPE = "ASYNC_TASK_RESULT"
MAX_RETRY_DELAY = 10.0


class WebhookSender:
    """Delivers the webhooks of one emulator."""

    def __init__(self, emulator: Emulator) -> None:
        self._emulator = emulator
        self._session: aiohttp.ClientSession | None = None

    def schedule(self, generation: Generation) -> None:
        """Deliver when ``generation`` ends on the clock (needs a running loop)."""
        self._emulator.spawn(self._at_end(generation))

    def trigger(self, generation: Generation) -> None:
        """Deliver now, unless already done or under way."""
        if generation.webhook_sent or not generation.spec.webhook_url:
            return
        generation.webhook_sent = True
        self._emulator.spawn(self._deliver(generation))

    async def _at_end(self, generation: Generation) -> None:
        emulator = self._emulator
        _, end = generation_times(generation, emulator.config)
        await emulator.clock.sleep(end - emulator.clock.now())
        self.trigger(generation)

    async def _deliver(self, generation: Generation) -> None:
        from .responses import task_result_body  # responses -> core -> this module

        emulator = self._emulator
        url = generation.spec.webhook_url
        assert url is not None
        view = emulator.observe_generation(generation)
        body = {
            "event_type": EVENT_TYPE,
            "payload": task_result_body(emulator, generation, view, generation.base_url),
        }
        timeout = aiohttp.ClientTimeout(total=emulator.config.webhook_timeout)
        retries = RetryPolicy(base_delay=emulator.config.webhook_retry_delay,
                              max_delay=MAX_RETRY_DELAY, jitter=0.0)
        for attempt in range(emulator.config.webhook_retries + 1):
            if attempt:
                await asyncio.sleep(backoff_delay(attempt, retries))
            try:
                async with self._client().post(url, json=body, timeout=timeout) as answer:
                    await answer.read()
                    if 200 <= answer.status < 300:
                        emulator.counters.webhooks_delivered += 1
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.debug("webhook to %s failed: %s", url, exc)
        emulator.counters.webhooks_failed += 1

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": "lora-pipeline-emulator-webhook"}
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
