"""The router's batches (issue 13, item 5): handed over as soon as one event is buffered,
with whatever is already waiting; acknowledged only once the agent asks for the next."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust
import pytest
from faust.types import Message

from pipeline.agents.take import take_ready

# Loop turns the test gives a batch to come: no timer can fire within them, so a take
# that waits for a window (Faust's take_events) is still waiting after them.
TURNS = 200


class _Events:
    """A Faust stream fed by hand: events put straight into its channel's queue."""

    def __init__(self) -> None:
        # Nothing connects: the consumer is only created, never started.
        self.app = faust.App("take-ready-test", broker="kafka://127.0.0.1:1", web_enabled=False)
        self.app.flow_control.resume()
        self.stream = self.app.stream(self.app.channel())
        self.offset = 0

    async def put(self, *values: int) -> None:
        for value in values:
            message = Message(
                "events", 0, self.offset, 0.0, 0, None, None, b"", None,
                generation_id=self.app.consumer_generation_id,
            )  # fmt: skip
            self.offset += 1
            event = self.app.create_event(None, value, None, message)
            await self.stream.channel.queue.put(event)


@pytest.fixture
async def events() -> AsyncIterator[_Events]:
    fed = _Events()
    yield fed
    await fed.stream.stop()
    # The stream made the app's consumer, whose thread made an event loop of its own: close
    # it, it never runs.
    fed.app.consumer._thread.thread_loop.close()


async def _within_turns(awaitable: Any) -> Any:
    """The result of `awaitable` if it finishes within TURNS loop turns; else it fails."""
    task = asyncio.ensure_future(awaitable)
    for _ in range(TURNS):
        if task.done():
            return task.result()
        await asyncio.sleep(0)
    task.cancel()
    raise AssertionError(f"no batch within {TURNS} loop turns")


async def test_a_lone_event_is_handed_over_without_waiting_for_company(events: _Events) -> None:
    await events.put(7)
    batches = take_ready(events.stream, 1000)
    batch = await _within_turns(batches.__anext__())
    assert [e.value for e in batch] == [7]
    await events.put(8)
    assert [e.value for e in await _within_turns(batches.__anext__())] == [8]
    await batches.aclose()


async def test_events_already_waiting_make_one_batch_up_to_the_maximum(events: _Events) -> None:
    await events.put(*range(5))
    batches = take_ready(events.stream, 3)
    assert [e.value for e in await _within_turns(batches.__anext__())] == [0, 1, 2]
    assert [e.value for e in await _within_turns(batches.__anext__())] == [3, 4]
    await batches.aclose()


async def test_a_batch_is_acknowledged_only_when_the_next_is_asked_for(events: _Events) -> None:
    await events.put(1, 2)
    batches = take_ready(events.stream, 1000)
    first = await _within_turns(batches.__anext__())
    assert not any(e.message.acked for e in first)  # its deliveries are being sent
    await events.put(3)
    second = await _within_turns(batches.__anext__())
    assert all(e.message.acked for e in first)
    # The agent fails on the second batch: it is never acknowledged (nor committed past).
    with pytest.raises(RuntimeError):
        await batches.athrow(RuntimeError("send failed"))
    assert not any(e.message.acked for e in second)


async def test_a_backlog_arriving_a_record_at_a_time_makes_one_batch(events: _Events) -> None:
    """The consumer hands a fetched batch to the stream a record at a time, a few loop
    turns apart: the batch follows it instead of leaving with the first record."""

    async def hand_over() -> None:
        for value in range(10):
            await events.put(value)
            for _ in range(3):  # what the consumer's hand-over costs per record, about
                await asyncio.sleep(0)

    batches = take_ready(events.stream, 1000)
    feeder = asyncio.ensure_future(hand_over())
    batch = await _within_turns(batches.__anext__())
    await feeder
    assert [e.value for e in batch] == list(range(10))
    await batches.aclose()


async def test_the_batches_end_when_faust_stops_the_stream(events: _Events) -> None:
    """Faust ends a stream by throwing StopAsyncIteration into its channel: the batches
    end with it (an agent whose generator raised it would crash instead of stopping)."""
    batches = take_ready(events.stream, 1000)
    await events.stream.channel.queue.throw(StopAsyncIteration())
    with pytest.raises(StopAsyncIteration):
        await _within_turns(batches.__anext__())
