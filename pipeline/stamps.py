"""One look-up in flight at a time, shared by every caller that arrived before it was sent.

A publish stamps its events with the `destinations` end offsets (DestinationView.stamp), and
the stamp must come from a look-up sent after the publish began: a change that returned
before then is in the topic, so a later look-up sees it. Under load, one look-up per request
would put as many ListOffsets requests in flight as there are requests. Instead, at most one
is in flight; callers arriving meanwhile all wait for the next one, sent as soon as the one
in flight returns. No caller gets the answer of a look-up sent before it arrived, and each
waits at most for the rest of the current look-up plus one more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedLookup(Generic[T]):
    """`get()` answers from a call of `fetch` started after `get()` was called; concurrent
    callers share calls, at most one of which is in flight."""

    def __init__(self, fetch: Callable[[], Awaitable[T]]) -> None:
        self._fetch = fetch
        self._next: asyncio.Future[T] | None = None  # what callers arriving now will get
        self._task: asyncio.Task[None] | None = None  # the call in flight, if any
        self._scheduled = False  # a call is about to start (call_soon)

    async def get(self) -> T:
        """The result of a `fetch` call that started after this call began."""
        loop = asyncio.get_running_loop()
        if self._next is None:
            self._next = loop.create_future()
            # An unretrieved error (every caller cancelled) is not logged as lost.
            self._next.add_done_callback(_retrieve)
            if self._task is None and not self._scheduled:
                # Started on the next loop iteration: callers of this one share it too.
                self._scheduled = True
                loop.call_soon(self._start)
        return await asyncio.shield(self._next)

    def close(self) -> None:
        """Cancel the call in flight (at shutdown); its waiters get CancelledError."""
        if self._task is not None:
            self._task.cancel()

    def _start(self) -> None:
        self._scheduled = False
        future, self._next = self._next, None
        if future is None:
            return
        self._task = asyncio.get_running_loop().create_task(self._call(future))

    async def _call(self, future: asyncio.Future[T]) -> None:
        try:
            result = await self._fetch()
        except asyncio.CancelledError:
            future.cancel()
            if self._next is not None:
                self._next.cancel()
            raise
        except Exception as exc:  # handed to every caller of this round
            future.set_exception(exc)
        else:
            future.set_result(result)
        self._task = None
        if self._next is not None:
            self._start()  # the callers that arrived while this call was in flight


def _retrieve(future: asyncio.Future[T]) -> None:
    if not future.cancelled():
        with contextlib.suppress(Exception):
            future.exception()
