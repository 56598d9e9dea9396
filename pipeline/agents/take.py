"""Batches of stream events without a batching window.

Faust's `Stream.take_events(max_, within)` waits `within` seconds on every turn unless
`max_` events arrive first: at low rates every event sat in the buffer for up to the
whole window (the router's 50 ms, on average half of it) before it was routed.
`take_ready` yields as soon as one event is buffered, together with every event already
on its way (up to `max_`): those in the stream's channel and those the consumer is still
handing over, followed for as long as each loop turn or few brings one (no timer). A batch
is as large as the backlog, so at high rates batches still grow (records queue while the
previous batch's sends are awaited), and at low rates nothing waits for company.

Acknowledgement: the stream's own acks are off while batches are taken, and a batch's
events are acknowledged only when the agent asks for the next batch, i.e. after its body
finished with it. Unlike `take_events`, which acks in a `finally`, a batch the body raised
on (or was cancelled in) is not acknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from faust.types import EventT, StreamT

# Loop turns allowed per event while moving the already-waiting records into a batch.
MAX_TURNS_PER_EVENT = 8
# Loop turns in a row that bring no event before a batch is handed over (microseconds when
# nothing else is running; never a timer).
IDLE_TURNS = 8


def take_ready(stream: StreamT[Any], max_: int) -> AsyncGenerator[list[EventT[Any]], None]:
    """Lists of up to `max_` events: what is buffered, as soon as there is any. Registered
    with the stream like Faust's take helpers, so stopping the stream closes it."""
    batches = _take_ready(stream, max_)
    active = getattr(stream, "_active_agens", None)
    if active is not None:
        active.add(batches)
    return batches


async def _take_ready(stream: StreamT[Any], max_: int) -> AsyncGenerator[list[EventT[Any]], None]:
    s: Any = stream  # Faust's take helpers use these Stream internals too
    events: list[EventT[Any]] = []
    ready = asyncio.Event()  # at least one event is buffered
    consumed = asyncio.Event()  # a full buffer was handed out
    consuming: asyncio.Future[None] | None = None  # set while a batch is being handled
    queue: asyncio.Queue[Any] = s.channel.queue

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming
        try:
            if consuming is not None:  # never add to a batch the agent is handling
                try:
                    await consuming
                finally:
                    consuming = None
            event = s.current_event
            if event is None:
                raise RuntimeError("take_ready found current_event is None")
            events.append(event)
            ready.set()
            if len(events) >= max_:
                consumed.clear()
                await s.wait(consumed)
        except Exception as exc:  # the drainer's edge: Faust crashes the stream, as take does
            s.log.exception("Error adding to take buffer: %r", exc)
            await s.crash(exc)
        return value

    enable_acks = s.enable_acks
    s.enable_acks = False  # acked below, once the agent is done with the batch
    s.add_processor(add_to_buffer)
    s._enable_passive(aiter(s.channel))  # as Faust's take helpers do
    try:
        while not s.should_stop:
            if await s.wait_for_stopped(ready):
                break
            await _let_waiting_in(queue, events, max_)
            batch, consuming = list(events), asyncio.get_running_loop().create_future()
            try:
                yield batch
            finally:
                events.clear()
                ready.clear()
                if not consuming.done():
                    consuming.set_result(None)
                consumed.set()
            # Only when the agent asks for the next batch: a batch it failed on (or was
            # stopped in) is never acknowledged, so never committed past.
            for event in batch:
                await s.ack(event)
    finally:
        s.enable_acks = enable_acks
        s._processors.remove(add_to_buffer)


async def _let_waiting_in(queue: asyncio.Queue[Any], events: list[Any], max_: int) -> None:
    """Let the events already on their way into `events`, without waiting for any that have
    not arrived: return once IDLE_TURNS loop turns in a row brought none and the channel is
    empty (or at `max_`, or after MAX_TURNS_PER_EVENT turns per event at most, should the
    drainer stop taking from the channel).

    The consumer hands a fetched batch over a record at a time and the drainer moves one
    from the channel per loop turn or two, so a backlog arrives over a few turns each:
    following it makes a batch as large as the backlog, where stopping at the first empty
    turn made batches of one or two events that each cost a produce round trip."""
    idle = 0
    for _ in range(MAX_TURNS_PER_EVENT * max_):
        if len(events) >= max_ or idle >= IDLE_TURNS:
            return
        had = len(events)
        await asyncio.sleep(0)
        idle = 0 if len(events) > had or not queue.empty() else idle + 1
