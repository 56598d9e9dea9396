"""The threads the AWS sinks' blocking boto3 calls run on, shared so that no destination and
no endpoint can take them all.

Each AWS sink has one pool of `threads` threads. Before it gets a thread, a call takes a
slot of its destination (at most `threads // 8` of them) and one of its endpoint (the
region, or the operator's endpoint URL: at most `threads // 2`). A slot is given back when
the thread has finished the call, not when its caller stops waiting, so calls stuck in a
slow region keep counting against that region and the other half of the pool stays free
for every other region. Every call has a deadline (the delivery timeout) that covers the
waits for both slots and for the thread: a call that has not finished by then fails as
retryable, and one still queued for a thread is taken off the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

MAX_THREADS = 64
# One destination may hold at most 1/DESTINATION_SHARE of the threads, one endpoint at
# most 1/ENDPOINT_SHARE.
DESTINATION_SHARE = 8
ENDPOINT_SHARE = 2


class CallPool:
    """The threads of one AWS sink, and the per-endpoint limits on them."""

    def __init__(self, service: str, threads: int) -> None:
        self.threads = max(1, min(MAX_THREADS, threads))
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix=f"herald-{service}")
        # asyncio semaphores belong to one loop: one set per loop (tests run several).
        self._endpoints: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]
        ] = weakref.WeakKeyDictionary()

    def lane(self, endpoint: str) -> Lane:
        """Where one destination's calls queue: its own slots and its endpoint's."""
        loop = asyncio.get_running_loop()
        endpoints = self._endpoints.setdefault(loop, {})
        if endpoint not in endpoints:
            endpoints[endpoint] = asyncio.Semaphore(max(1, self.threads // ENDPOINT_SHARE))
        own = asyncio.Semaphore(max(1, self.threads // DESTINATION_SHARE))
        return Lane(self._executor, own, endpoints[endpoint])

    async def run_unlimited(self, function: Callable[[], Any]) -> Any:
        """Run `function` on the pool without slots (creating clients: no network I/O)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    async def aclose(self) -> None:
        """Stop the threads, waiting for the calls still running."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)


class Lane:
    """One destination's way onto the pool."""

    def __init__(
        self,
        executor: ThreadPoolExecutor,
        own: asyncio.Semaphore,
        endpoint: asyncio.Semaphore,
    ) -> None:
        self._executor = executor
        self._slots = (own, endpoint)

    async def run(self, function: Callable[[], Any], deadline_s: float) -> Any:
        """`function()` on a thread, within `deadline_s` from now, waits included. Raises
        TimeoutError at the deadline (the thread, if it started, finishes on its own)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(deadline_s):
            taken = await self._take()
            try:
                future = self._executor.submit(function)
            except BaseException:
                self._give_back(taken)
                raise
            future.add_done_callback(lambda _: _call_soon(loop, self._give_back, taken))
            # Cancelling this (the deadline) cancels the job if no thread has started it.
            return await asyncio.wrap_future(future)

    async def _take(self) -> list[asyncio.Semaphore]:
        taken: list[asyncio.Semaphore] = []
        try:
            for slots in self._slots:
                await slots.acquire()
                taken.append(slots)
        except BaseException:
            self._give_back(taken)
            raise
        return taken

    @staticmethod
    def _give_back(taken: list[asyncio.Semaphore]) -> None:
        for slots in taken:
            slots.release()


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> None:
    """From a pool thread: run `callback` on `loop` (gone if the loop has closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)
