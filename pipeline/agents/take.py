"""Batches of an agent's events taken straight from its channel, without a batching window.

Faust's stream hands its events over one at a time: per event a loop turn, a processor
call, the sensors on the way in and on the way out, and an ack; its take helpers add a
buffer and a drainer task on top, and `Stream.take_events(max_, within)` also waits
`within` seconds on every turn unless `max_` events arrive first. The router profiled at
about a third of its CPU in that machinery (bench/results/profile-router/). `take_ready`
reads the channel's queue itself instead: it waits for one event, then takes every event
already queued and follows the consumer's hand-over for as long as each loop turn or few
brings one (no timer), up to `max_`. A batch is as large as the backlog, so at high rates
batches grow (records queue while the previous batch's sends are awaited), and at low rates
nothing waits for company.

Acknowledgement, as the stream does it: an event's message is tracked as unacknowledged
when it is taken (a rebalance waits for it), and acknowledged (so committable) only when
the agent asks for the next batch, i.e. after its body finished with it; a batch the body
raised on, or was cancelled in, is never acknowledged. An event fetched in an earlier
consumer generation (before a rebalance) is acknowledged and dropped, as the stream drops
it. Faust's sensors are not told about these events (the app reads none of them: its web
views are off and Herald's metrics are its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from faust.types import EventT, StreamT

# Loop turns in a row that bring no event before a batch is handed over (microseconds when
# nothing else is running; never a timer). The consumer hands a fetched batch over a few
# records per turn, so stopping at the first empty turn made batches of a few events.
IDLE_TURNS = 8


def take_ready(stream: StreamT[Any], max_: int) -> AsyncGenerator[list[EventT[Any]], None]:
    """Lists of up to `max_` events: what is queued, as soon as there is any. Registered
    with the stream like Faust's take helpers, so stopping the stream closes it."""
    batches = _take_ready(stream, max_)
    active = getattr(stream, "_active_agens", None)
    if active is not None:
        active.add(batches)
    return batches


async def _take_ready(stream: StreamT[Any], max_: int) -> AsyncGenerator[list[EventT[Any]], None]:
    s: Any = stream
    queue: Any = s.channel.queue  # the stream's channel is subscribed already (app.stream)
    taker = _Taker(s.app)
    while not s.should_stop:
        batch: list[EventT[Any]] = []
        try:
            taker.take(await queue.get(), batch)
            await _take_waiting(taker, queue, batch, max_)
        except StopAsyncIteration:  # thrown into the channel when Faust stops the stream
            return
        if not batch:
            continue  # every one was of an earlier generation
        yield batch
        # Only when the agent asks for the next batch: a batch it failed on (or was
        # stopped in) is never acknowledged, so never committed past.
        for event in batch:
            event.ack()


async def _take_waiting(taker: _Taker, queue: Any, batch: list[EventT[Any]], max_: int) -> None:
    """Take the events already queued or on their way into `batch`, without waiting for any
    that have not arrived: return at `max_` values taken, or once IDLE_TURNS loop turns in a
    row brought none."""
    taken, idle = 1, 0
    while taken < max_ and idle < IDLE_TURNS:
        if queue.empty():
            idle += 1
            await asyncio.sleep(0)
            continue
        idle = 0
        taken += 1
        taker.take(queue.get_nowait(), batch)


class _Taker:
    """What the stream does with each event it takes from its channel, minus the sensors."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._unacked = app.consumer._unacked_messages
        self._acking_topics = app.topics._acking_topics

    def take(self, event: EventT[Any], batch: list[EventT[Any]]) -> None:
        """Append `event` to `batch`, tracked as unacknowledged; or, if it was fetched
        before the latest rebalance, acknowledge and drop it."""
        app, message = self._app, event.message
        if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
            event.ack()
            return
        if not message.tracked and message.topic in self._acking_topics:
            message.tracked = True
            self._unacked.add(message)
        batch.append(event)
