"""Per-account images-per-minute limits over a sliding 60 s window of the emulator's clock."""

from __future__ import annotations

from collections import deque

WINDOW_SECONDS = 60.0


class RateLimiter:
    """Counts images granted per (account, kind) in the last :data:`WINDOW_SECONDS`."""

    def __init__(self) -> None:
        self._grants: dict[tuple[str, str], deque[tuple[float, int]]] = {}

    def acquire(self, account: str, kind: str, count: int, limit: int, now: float) -> float:
        """Grant ``count`` images and return 0, or refuse and return seconds until it fits.

        A refused request consumes nothing.
        """
        grants = self._grants.setdefault((account, kind), deque())
        while grants and grants[0][0] <= now - WINDOW_SECONDS:
            grants.popleft()
        used = sum(n for _, n in grants)
        if used + count <= limit:
            grants.append((now, count))
            return 0.0
        # Free images oldest first until the request would fit.
        excess = used + count - limit
        for granted_at, n in grants:
            excess -= n
            if excess <= 0:
                return max(0.001, granted_at + WINDOW_SECONDS - now)
        return WINDOW_SECONDS  # count > limit: never fits; say "a minute"

    def reset(self) -> None:
        """Forget every grant."""
        self._grants.clear()
