"""Sources (issue 18): an ingest process killed (SIGKILL) while it consumes a RabbitMQ queue
loses no message.

A real durable queue on the session's RabbitMQ holds TOTAL persistent messages, each with a
publisher-chosen event id, before the ingest process starts on it. The process is killed
once a fifth of them are ingested; RabbitMQ's own count (a passive declare, once the dead
consumer is gone) shows the kill left messages unacknowledged, and none acknowledged that
is not in `events`. Another process then ingests the rest: every id reaches Herald's
`events` topic, and once that process stops, nothing is left in the queue (all
acknowledged). Messages that were in `events` but not
acknowledged at the kill are delivered again and land there twice (at-least-once); the
test counts them and checks each copy is the same event (its publisher id), which the
router drops as a repeat.

The RabbitMQ source's consumer also runs here in the test's own process, to close its
channel while a batch is being ingested, as RabbitMQ does when an acknowledgement is late
(consumer_timeout) or the connection drops: the source connects again and the batch comes
again, and the process goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pydantic import SecretStr

from api.sources.ingest import SourceReader
from api.sources.rabbitmq import RabbitMQSourceConsumer
from pipeline.source_settings import RabbitMQSource
from pipeline.topics import EVENTS
from tests.integration.conftest import Services, Stack
from tests.integration.test_metrics import scrape, total
from tests.integration.test_sources import (
    EVENTS_PARTITIONS,
    INGEST_PORT,
    _declare_queue,
    _event_type,
    _read_all,
    _start,
    ingest_env,
)
from tests.support import eventually

# Enough for a few of the source's batches (max_batch, the prefetch, is 2000), few enough to
# publish and ingest in seconds on a 2-core machine.
TOTAL = 10_000
# Publishes awaiting RabbitMQ's confirms at once.
PUBLISH_CONCURRENCY = 500
SOURCE = "jobs-kill"
# The kill comes once this many are ingested: past the first batches, when the process
# spends most of its time with a batch taken and not yet acknowledged.
KILL_AT = TOTAL // 5


@dataclass(frozen=True)
class QueueState:
    """RabbitMQ's own view of a queue: messages ready (not delivered, or delivered to a
    consumer that went away unacknowledged) and consumers attached."""

    ready: int
    consumers: int


async def _queue_state(channel: AbstractChannel, name: str) -> QueueState:
    queue = await channel.declare_queue(name, passive=True)
    result = queue.declaration_result
    return QueueState(result.message_count, result.consumer_count)


async def _publish(channel: AbstractChannel, queue: str, event_type: str, ids: list[str]) -> None:
    """Persistent messages, one per id, each confirmed by RabbitMQ."""
    for start in range(0, len(ids), PUBLISH_CONCURRENCY):
        await asyncio.gather(
            *(
                channel.default_exchange.publish(
                    aio_pika.Message(
                        json.dumps({"id": event_id, "type": event_type, "data": {}}).encode(),
                        message_id=event_id,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=queue,
                )
                for event_id in ids[start : start + PUBLISH_CONCURRENCY]
            )
        )


async def _without_consumer(channel: AbstractChannel, queue: str) -> QueueState:
    """The queue's state once RabbitMQ has seen its consumer go (its unacknowledged
    messages are ready again then)."""

    async def gone() -> QueueState | None:
        state = await _queue_state(channel, queue)
        return state if state.consumers == 0 else None

    state: QueueState = await eventually(gone, what="the ingest process's consumer gone")
    return state


async def _copies_in_events(services: Services, event_type: str) -> Counter[str]:
    """How many times each of this test's event ids is in `events`; every copy is the
    message's event, marked for the router to drop a repeat of its id."""
    events = await _read_all(services.kafka_bootstrap, EVENTS, EVENTS_PARTITIONS)
    mine = [e for e in events if e["type"] == event_type]
    assert all(e["tenant"] == "dev" and e["data"] == {} and e["deduplicate"] for e in mine)
    return Counter(e["id"] for e in mine)


async def test_a_killed_ingest_process_loses_no_rabbitmq_message(
    services: Services, stack: Stack
) -> None:
    tag = uuid.uuid4().hex[:8]
    queue = f"platform-kill-{tag}"
    event_type = _event_type()
    ids = [f"evt_{tag}_{n}" for n in range(TOTAL)]
    await _declare_queue(services.amqp_url, queue)
    source = {
        "name": SOURCE,
        "type": "rabbitmq",
        "url": services.amqp_url,
        "queue": queue,
        "default_tenant": "dev",
    }
    env = ingest_env(stack, [source])
    connection = await aio_pika.connect(services.amqp_url)
    async with connection:
        channel = await connection.channel()
        await _publish(channel, queue, event_type, ids)
        assert await _queue_state(channel, queue) == QueueState(TOTAL, 0)

        process = _start(env)
        try:
            await _kill_mid_stream(process, services, channel, queue, event_type)
            process = _start(env)

            async def all_in_events() -> Counter[str] | None:
                copies = await _copies_in_events(services, event_type)
                return copies if set(copies) == set(ids) else None

            await eventually(all_in_events, timeout_s=90, what="every publisher id in events")
            # Stopped, the process's unacknowledged messages would be ready again: none is.
            process.terminate()
            process.wait(timeout=30)
            assert (await _without_consumer(channel, queue)).ready == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
            await channel.queue_delete(queue)

    copies = await _copies_in_events(services, event_type)
    assert set(copies) == set(ids)
    duplicates = sum(copies.values()) - TOTAL
    print(f"{TOTAL} messages, {duplicates} copies more in events (delivered again after the kill)")


async def _kill_mid_stream(
    process: subprocess.Popen[bytes],
    services: Services,
    channel: AbstractChannel,
    queue: str,
    event_type: str,
) -> None:
    """SIGKILL the ingest process once it has ingested KILL_AT records; check, from RabbitMQ
    and `events`, that it died mid-stream (else the test would show nothing) and that
    RabbitMQ forgot no message that is not in `events`."""

    async def ingesting() -> bool:
        samples = await scrape(f"http://127.0.0.1:{INGEST_PORT}")
        return total(samples, "herald_source_records_total", source=SOURCE) >= KILL_AT

    await eventually(ingesting, timeout_s=60, what=f"{KILL_AT} records ingested")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    acknowledged = TOTAL - (await _without_consumer(channel, queue)).ready
    in_events = len(await _copies_in_events(services, event_type))
    print(f"at the kill: {acknowledged} acknowledged, {in_events} in events")
    assert acknowledged < TOTAL, "the process had acknowledged every message before the kill"
    # What RabbitMQ forgot is in `events`: acknowledged only once durable there.
    assert in_events >= acknowledged


class _ClosingIngester:
    """Stands in for the Ingester (Herald's `events` is beside the point here): records each
    batch's bodies, and closes the RabbitMQ channel under the first one."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []

    async def ingest(
        self, reader: SourceReader, records: Sequence[AbstractIncomingMessage]
    ) -> None:
        self.batches.append([m.body for m in records])
        if len(self.batches) == 1:
            await records[0].channel.close()


async def test_a_channel_closed_under_a_batch_reconnects_and_gets_the_batch_again(
    services: Services,
) -> None:
    queue = f"platform-closed-{uuid.uuid4().hex[:8]}"
    await _declare_queue(services.amqp_url, queue)
    bodies = [f"message {n}".encode() for n in range(5)]
    connection = await aio_pika.connect(services.amqp_url)
    async with connection:
        channel = await connection.channel()
        for body in bodies:
            await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)
        source = RabbitMQSource(
            name="closed", type="rabbitmq", url=SecretStr(services.amqp_url), queue=queue
        )
        ingester = _ClosingIngester()
        run = asyncio.create_task(RabbitMQSourceConsumer(source, ingester).run())

        def all_again() -> bool:
            if run.done():
                run.result()  # the consumer gave up: its error fails the test
            again = [body for batch in ingester.batches[1:] for body in batch]
            return sorted(again) == bodies

        try:
            await eventually(all_again, what="the batch again, and the rest, once each")
        finally:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
        # Acknowledged after the reconnection: nothing is ready again once the consumer left.
        assert (await _without_consumer(channel, queue)).ready == 0
        await channel.queue_delete(queue)
