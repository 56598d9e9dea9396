"""Publishing events to Kafka: which ones the broker confirmed, which not.

Every call stamps its events once (DestinationView.stamp, one shared look-up) and encodes
each event once; the stamp is spliced into the encoded bytes. A few events go through the
producer's own batching (`send`, so concurrent single publishes share produce requests); a
larger call is written as one record batch per partition (`send_batch`): one future per
partition instead of one per event.

Partitions: an event whose id makes it deduplicated (publisher-chosen, or derived from an
Idempotency-Key) goes where Kafka's default partitioner puts its key, so a repeat meets the
router's marker of the first copy (pipeline/dedupe.py). Any other event has a fresh id no
one repeats, and is spread over the partitions in turn without hashing its key.
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import Iterator
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner

from api.errors import unavailable
from pipeline import metrics
from pipeline.topics import EVENTS
from pipeline.view import DestinationView

# None: acknowledged; else the KafkaError that left the event unconfirmed.
Outcome = Exception | None
# Calls with more events than this write record batches of their own.
SEND_ONE_BY_ONE_AT_MOST = 8

_KEY_PARTITIONER = DefaultPartitioner()


class _Partitions:
    """Per producer: whose turn it is to add a batch to each partition, and the next
    partition of an event that may go anywhere."""

    def __init__(self) -> None:
        # aiokafka queues one batch per partition and lets other senders of batches poll
        # for the slot with a timeout that shrinks on every wake-up; they take turns here.
        self.turns: dict[int, asyncio.Lock] = {}
        self.rotation: Iterator[int] = itertools.count()


_STATE: weakref.WeakKeyDictionary[AIOKafkaProducer, _Partitions] = weakref.WeakKeyDictionary()


def encode(event: dict[str, Any], route_after: bytes) -> bytes:
    """The `events` record of `event` with its stamp: the event's JSON (its `data` may be an
    orjson.Fragment, already encoded) with `"route_after": <route_after>` spliced in."""
    return b'%b,"route_after":%b}' % (orjson.dumps(event)[:-1], route_after)


async def publish_each(
    view: DestinationView, producer: AIOKafkaProducer, events: list[dict[str, Any]]
) -> list[Outcome]:
    """Stamp and write `events`; per event, None once the broker acknowledged it (acks=all),
    else the error that left it unconfirmed (it may still have reached the broker).

    The stamp (the `destinations` end offsets, from a look-up sent after this call began)
    makes every destination change that returned before it be in force when the events
    are routed. An error that concerns one record (too large) fails that event only; any
    other stops sending, and the events not sent yet fail with it.
    """
    try:
        stamp = await view.stamp()
    except KafkaError as exc:
        return _count([exc] * len(events))
    route_after = orjson.dumps({str(p): o for p, o in stamp.items()})
    try:
        partitions = sorted(await producer.partitions_for(EVENTS))
    except KafkaError as exc:
        return _count([exc] * len(events))
    state = _STATE.setdefault(producer, _Partitions())
    by_partition: dict[int, list[int]] = {}
    records = []
    for position, event in enumerate(events):
        key = event["id"].encode()
        if event.get("deduplicate"):
            partition = _KEY_PARTITIONER(key, partitions, partitions)
        else:
            partition = partitions[next(state.rotation) % len(partitions)]
        by_partition.setdefault(partition, []).append(position)
        records.append((key, encode(event, route_after)))
    if len(events) <= SEND_ONE_BY_ONE_AT_MOST:
        return _count(await _send_each(producer, records, by_partition))
    return _count(await _send_batches(producer, state, records, by_partition))


async def _send_each(
    producer: AIOKafkaProducer,
    records: list[tuple[bytes, bytes]],
    by_partition: dict[int, list[int]],
) -> list[Outcome]:
    pending: dict[int, asyncio.Future[Any] | Exception] = {}
    failure: Exception | None = None
    for partition, positions in by_partition.items():
        for position in positions:
            if failure is not None:
                pending[position] = failure
                continue
            key, value = records[position]
            try:
                pending[position] = await producer.send(EVENTS, value, key=key, partition=partition)
            except MessageSizeTooLargeError as exc:
                pending[position] = exc
            except KafkaError as exc:
                failure = pending[position] = exc
    return [await _confirmed(pending[position]) for position in range(len(records))]


async def _send_batches(
    producer: AIOKafkaProducer,
    state: _Partitions,
    records: list[tuple[bytes, bytes]],
    by_partition: dict[int, list[int]],
) -> list[Outcome]:
    """One record batch per partition (more if one outgrows the producer's batch size)."""
    outcomes: list[Outcome] = [None] * len(records)
    sent: list[tuple[list[int], asyncio.Future[Any]]] = []
    failure: Exception | None = None
    for partition, positions in by_partition.items():
        for batch_positions, builder in _batches(producer, records, positions, outcomes):
            if failure is None:
                try:
                    async with state.turns.setdefault(partition, asyncio.Lock()):
                        future = await producer.send_batch(builder, EVENTS, partition=partition)
                    sent.append((batch_positions, future))
                    continue
                except KafkaError as exc:
                    failure = exc
            for position in batch_positions:
                outcomes[position] = failure
    for batch_positions, future in sent:
        outcome = await _confirmed(future)
        for position in batch_positions:
            outcomes[position] = outcome
    return outcomes


def _batches(
    producer: AIOKafkaProducer,
    records: list[tuple[bytes, bytes]],
    positions: list[int],
    outcomes: list[Outcome],
) -> Iterator[tuple[list[int], Any]]:
    """Closed record batches of `positions` (and which positions each holds); a record too
    large for an empty batch gets its error in `outcomes` instead."""
    builder, held = producer.create_batch(), list[int]()
    for position in positions:
        key, value = records[position]
        if builder.append(key=key, value=value, timestamp=None) is None:  # full: now closed
            if held:
                yield held, builder
            builder, held = producer.create_batch(), list[int]()
            if builder.append(key=key, value=value, timestamp=None) is None:
                outcomes[position] = MessageSizeTooLargeError()
                builder = producer.create_batch()
                continue
        held.append(position)
    if held:
        builder.close()
        yield held, builder


async def publish_events(
    view: DestinationView, producer: AIOKafkaProducer, events: list[dict[str, Any]]
) -> None:
    """Stamp and write `events`; returns once the broker acknowledged every one, else a 503
    (for a call that publishes on the API's own account: a replay, a test event)."""
    failures = [outcome for outcome in await publish_each(view, producer, events) if outcome]
    if failures:
        raise unavailable(
            "The event broker is unreachable; the event was not accepted."
        ) from failures[0]


async def _confirmed(item: asyncio.Future[Any] | Exception) -> Outcome:
    if isinstance(item, Exception):
        return item
    try:
        await item
    except KafkaError as exc:
        error: Exception = exc
        return error
    return None


def _count(outcomes: list[Outcome]) -> list[Outcome]:
    failed = sum(1 for outcome in outcomes if outcome is not None)
    metrics.EVENTS_ACCEPTED.inc(len(outcomes) - failed)
    if failed:
        metrics.EVENTS_FAILED.inc(failed)
        metrics.KAFKA_PRODUCE_ERRORS.labels(topic=EVENTS).inc()
    return outcomes
