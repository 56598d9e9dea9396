"""Look-ups shared by every caller that arrived before they were sent, a few in flight.

A publish stamps its events with the `destinations` end offsets (DestinationView.stamp), and
the stamp must come from a look-up sent after the publish began: a change that returned
before then is in the topic, so a later look-up sees it. Under load, one look-up per request
would put as many ListOffsets requests in flight as there are requests. Instead, the callers
of one event-loop iteration share one look-up, and at most `max_in_flight` are in flight;
callers arriving when that many are all wait for the next one, sent as soon as one returns.
No caller gets the answer of a look-up sent before it arrived. With one in flight a caller
also waits for the rest of the current look-up, which at a fixed number of concurrent
publishes costs throughput: a few in flight keep the broker's load bounded without that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedLookup(Generic[T]):
    """`get()` answers from a call of `fetch` started after `get()` was called; concurrent
    callers share calls, at most `max_in_flight` of which are in flight."""

    def __init__(self, fetch: Callable[[], Awaitable[T]], max_in_flight: int = 1) -> None:
        self._fetch = fetch
        self._max_in_flight = max_in_flight
        self._next: asyncio.Future[T] | None = None  # what callers arriving now will get
        self._tasks: set[asyncio.Task[None]] = set()  # the calls in flight
        self._scheduled = False  # a call is about to start (call_soon)

    async def get(self) -> T:
        """The result of a `fetch` call that started after this call began."""
        loop = asyncio.get_running_loop()
        if self._next is None:
            self._next = loop.create_future()
            # An unretrieved error (every caller cancelled) is not logged as lost.
            self._next.add_done_callback(_retrieve)
            if len(self._tasks) < self._max_in_flight and not self._scheduled:
                # Started on the next loop iteration: callers of this one share it too.
                self._scheduled = True
                loop.call_soon(self._start)
        return await asyncio.shield(self._next)

    def close(self) -> None:
        """Cancel the calls in flight (at shutdown); their waiters get CancelledError."""
        for task in self._tasks:
            task.cancel()

    def _start(self) -> None:
        self._scheduled = False
        future, self._next = self._next, None
        if future is None:
            return
        task = asyncio.get_running_loop().create_task(self._call(future))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        if self._next is not None and not self._scheduled:
            self._start()  # the callers that arrived while every slot was taken


def _retrieve(future: asyncio.Future[T]) -> None:
    if not future.cancelled():
        with contextlib.suppress(Exception):
            future.exception()
