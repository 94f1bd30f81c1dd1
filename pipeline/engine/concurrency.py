"""Running coroutines side by side with one clear error when some fail."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any

from ..errors import BadCredentials


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
