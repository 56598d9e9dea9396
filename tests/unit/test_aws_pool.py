"""The AWS sinks' thread pool: shares per destination and endpoint, deadlines (aws_pool.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from pipeline.sinks.aws_pool import CallPool
from tests.support import eventually


@pytest.fixture
async def pool() -> AsyncIterator[CallPool]:
    pool = CallPool("test", threads=8)  # a destination may hold 1 thread, an endpoint 4
    yield pool
    await pool.aclose()


async def test_a_timed_out_call_keeps_its_slot_until_its_thread_is_done(pool: CallPool) -> None:
    lane = pool.lane("slow-region")
    gate = threading.Event()
    ran: list[str] = []

    def stuck() -> str:
        ran.append("stuck")
        gate.wait(10)
        return "stuck"

    with pytest.raises(TimeoutError):
        await lane.run(stuck, deadline_s=0.2)
    # The thread still runs the first call: the destination's one slot is not free, so the
    # second call never reaches a thread and fails at its own deadline.
    with pytest.raises(TimeoutError):
        await lane.run(lambda: ran.append("second"), deadline_s=0.2)
    assert ran == ["stuck"]
    gate.set()
    assert await lane.run(lambda: "after", deadline_s=5) == "after"


async def test_one_endpoint_holds_at_most_half_the_threads(pool: CallPool) -> None:
    gate = threading.Event()
    running = 0
    lock = threading.Lock()

    def stuck() -> None:
        nonlocal running
        with lock:
            running += 1
        gate.wait(10)

    lanes = [pool.lane("slow-region") for _ in range(8)]  # 8 destinations, one region
    calls = [asyncio.ensure_future(lane.run(stuck, deadline_s=10)) for lane in lanes]
    other = pool.lane("healthy-region")
    try:
        await eventually(lambda: running == 4, timeout_s=5, what="4 calls on threads")
        assert await other.run(lambda: "served", deadline_s=5) == "served"
        assert running == 4  # the other 4 destinations of the slow region still wait
    finally:
        gate.set()
        await asyncio.gather(*calls)
