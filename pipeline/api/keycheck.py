"""The key check: a refused API key costs one request, however many are in flight.

A pass starts many requests at once (one per upload in flight). With a wrong key each of
them would be refused on its own, a small storm against a service that already said no.
So, until the service has once answered a request carrying the key with anything but a
refusal of it, those requests go one at a time: the first is sent, the others wait for
its answer.

- The key is *accepted* once a request got an answer that is neither a server error
  (5xx), a 429, nor a 401 or 403: the service looked at the key and let it through. From
  then on requests flow concurrently, with no lock and no extra request.
- The key is *refused* once an answer was :class:`~pipeline.errors.BadCredentials`:
  every waiting and later request raises that same refusal without being sent.
- Anything else (no answer, a 5xx, a 429, an edge's 403) says nothing about the key: the
  next request waiting goes, alone again.

Presigned transfers never carry the key and never pass through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..errors import BadCredentials

#: Answers that come from before the key was looked at, or that refuse it.
_SAYS_NOTHING_OF_THE_KEY = frozenset({401, 403, 429})


def accepts_key(status: int, error: BaseException | None = None) -> bool:
    """True when an answer with ``status`` (and the error made of it) shows the key was
    let through.

    >>> [accepts_key(s) for s in (200, 404, 400, 403, 429, 503)]
    [True, True, True, False, False, False]
    """
    if isinstance(error, BadCredentials):
        return False
    return status < 500 and status not in _SAYS_NOTHING_OF_THE_KEY


class KeyCheck:
    """Holds requests carrying the key until the service has once accepted it (see the
    module doc). One per :class:`~pipeline.api.client.ApiClient`; used on its loop only."""

    def __init__(self) -> None:
        self._accepted = False
        self._refusal: BadCredentials | None = None
        self._testing = False
        self._settled = asyncio.Event()
        #: Requests waiting for the first answer.
        self.waiting = 0

    @property
    def accepted(self) -> bool:
        """True once an answer showed the key was let through."""
        return self._accepted

    @property
    def refusal(self) -> BadCredentials | None:
        """The service's refusal of the key, once it refused it."""
        return self._refusal

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Around one request carrying the key: waits for its turn while the key is untried,
        raises the refusal when the key was refused. Report the answer with :meth:`answered`
        inside the block."""
        self._raise_if_refused()
        if self._accepted:
            yield
            return
        testing = await self._turn()
        try:
            yield
        finally:
            if testing:
                self._testing = False
                self._wake()

    def answered(self, status: int, error: BaseException | None = None) -> None:
        """What the service answered a request carrying the key (``error``: the error made
        of a non-200 answer)."""
        if isinstance(error, BadCredentials):
            if self._refusal is None:
                self._refusal = error
            self._wake()
        elif accepts_key(status, error) and not self._accepted:
            self._accepted = True
            self._wake()

    async def _turn(self) -> bool:
        """Wait until this request may go; True when it goes alone, to try the key."""
        while True:
            self._raise_if_refused()
            if self._accepted:
                return False
            if not self._testing:
                self._testing = True
                return True
            self.waiting += 1
            try:
                await self._settled.wait()
            finally:
                self.waiting -= 1

    def _wake(self) -> None:
        """Let every waiting request look again (one of them goes next, if any must)."""
        self._settled.set()
        self._settled = asyncio.Event()

    def _raise_if_refused(self) -> None:
        refusal = self._refusal
        if refusal is not None:
            # A fresh error per request: one instance raised in many tasks would share
            # (and keep rewriting) its traceback.
            raise BadCredentials(refusal.status, refusal.reason, refusal.message, refusal.path)
