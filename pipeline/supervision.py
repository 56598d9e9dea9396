"""Keeps the worker's consume loops running, or stops the worker when one cannot be.

A consume loop (the delivery runner's, the indexer's) is a task that never returns. Left
bare, one that raises dies silently while the process looks healthy. A SupervisedLoop runs
it, restarts it with backoff after a failure (after `reset`, which rewinds what the dead
loop had fetched), and after `max_restarts` failures in a row (at once with 0; never with
None) calls `give_up`, which stops the worker so its own supervisor starts a fresh one.
The loop calls `beat()` once per turn; `alive` (for /readyz) says it runs and is not stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

from pipeline import metrics

log = logging.getLogger(__name__)

Body = Callable[[], Awaitable[None]]
GiveUp = Callable[[BaseException], Awaitable[None]]

# Exit status when the broker will not take what the worker must write (the router's
# deliveries, the recorder's outcomes): its supervisor restarts it.
EXIT_BROKER_UNREACHABLE = 75

# A loop that ran this long since its last restart counts as healthy again.
HEALTHY_AFTER_S = 60.0


class LoopEnded(Exception):
    """A consume loop returned, which it never should."""


class SupervisedLoop:
    """One consume loop, kept running."""

    def __init__(
        self,
        name: str,
        body: Body,
        give_up: GiveUp | None = None,
        *,
        max_restarts: int | None = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        stall_s: float = 60.0,
        reset: Body | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._body = body
        self._give_up = give_up
        self._max_restarts = max_restarts
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._stall_s = stall_s
        self._reset = reset
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._last_beat = clock()
        self._running = False

    def start(self) -> None:
        """Start the loop as a task."""
        self._last_beat = self._clock()
        self._task = asyncio.create_task(self._supervise(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop and wait for it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def beat(self) -> None:
        """The loop made one more turn."""
        self._last_beat = self._clock()

    @property
    def alive(self) -> bool:
        """Running (not failed, not waiting to restart) and turned within `stall_s`."""
        return self._running and self._clock() - self._last_beat < self._stall_s

    async def _supervise(self) -> None:
        failures = 0
        delay_s = self._backoff_s
        while True:
            started = self._clock()
            exc = await self._run_once(reset=failures > 0)
            self._running = False
            if self._clock() - started >= HEALTHY_AFTER_S:
                failures, delay_s = 0, self._backoff_s
            failures += 1
            metrics.LOOP_RESTARTS.labels(loop=self.name).inc()
            if self._max_restarts is not None and failures > self._max_restarts:
                log.critical("%s loop failed (%r); stopping the worker", self.name, exc)
                if self._give_up is not None:
                    await self._give_up(exc)
                return
            log.error("%s loop failed (%r); restarting in %.1f s", self.name, exc, delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, self._max_backoff_s)

    async def _run_once(self, *, reset: bool) -> BaseException:
        """Run the body (after `reset`, on a restart) until it fails; the failure (a
        return is one too)."""
        self._running = True
        self.beat()
        try:
            if reset and self._reset is not None:
                await self._reset()
            await self._body()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the edge of a consume loop: supervised, never silent
            return exc
        return LoopEnded(self.name)


def exit_process() -> NoReturn:
    """Leave at once, non-zero, so the supervisor restarts the worker. No clean shutdown:
    it commits what the agents acknowledged, and nothing of a process whose broker writes
    are failing should be trusted to commit (the router's take_ready acknowledges a batch
    only once its deliveries are sent, but a hard exit needs no such care)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_BROKER_UNREACHABLE)
