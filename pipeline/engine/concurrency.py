"""Running coroutines side by side: paid calls that land even when their caller stops,
long-lived tasks that are restarted when they fail, and groups with one clear error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

import structlog

from ..api.retry import RetryPolicy, backoff_delay
from ..errors import BadCredentials

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: Pauses before restarting a supervised task: 1 s, doubling up to a minute, for good
#: (``max_attempts`` is not used). No jitter: each task is restarted by itself.
RESTARTS = RetryPolicy(base_delay=1.0, max_delay=60.0, jitter=0.0)


class InFlight:
    """Paid calls in flight. :meth:`land` runs a paid request *and the recording of its
    outcome* to the end even when its caller is cancelled (a pass stopping, a sibling
    failing): the call goes on by itself, so a task the service created is recorded and
    never paid for twice. The runner gives what is in flight a bounded grace period
    (:meth:`drain`) before it closes the session and cuts the rest (:meth:`cut`).
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    async def land(self, call: Coroutine[Any, Any, T]) -> T:
        task = asyncio.ensure_future(call)
        self._tasks.add(task)
        task.add_done_callback(self._settled)
        return await asyncio.shield(task)

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Its caller may be gone (cancelled): the error is the caller's if it waits,
            # and logged here either way, never lost.
            log.debug("paid_call.failed", error=repr(task.exception()))

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the paid calls in flight; how many remain."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        return len(self._tasks)

    async def cut(self) -> None:
        """Cancel what is still in flight after the grace period: its outcome stays unknown
        (``submitting``) and the next pass deals with it as the engine's policy says."""
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    sleep: Callable[[float], Awaitable[None]],
    restarts: RetryPolicy = RESTARTS,
) -> None:
    """Run a long-lived task for good: an unexpected error is logged with its traceback and
    the task started again after a pause that grows as ``restarts`` says (see
    :func:`~pipeline.api.retry.backoff_delay`). Bad credentials and cancellation end it."""
    failures = 0
    while True:
        try:
            await run()
            return
        except (BadCredentials, asyncio.CancelledError):
            raise
        except Exception:
            failures += 1
            delay = backoff_delay(failures, restarts)
            log.exception("task.restarting", task=name, delay=delay)
        await sleep(delay)


async def run_all(coroutines: Iterable[Coroutine[Any, Any, Any]]) -> None:
    """Run all in a TaskGroup; if any fail, the rest are cancelled and one error is raised.

    Callers see the failure itself rather than an ExceptionGroup: bad credentials first
    (they concern the whole run), else the first error.
    """
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as failed:
        raise primary_error(failed) from None


def primary_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves = _leaves(group)
    for leaf in leaves:
        if isinstance(leaf, BadCredentials):
            return leaf
    return leaves[0]


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
