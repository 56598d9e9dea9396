"""Publishing events to Kafka: which ones the broker confirmed, which not.

Every call stamps its events once (DestinationView.stamp, one shared look-up) and encodes
each event once; the stamp is spliced into the encoded bytes. A few events go through the
producer's own batching (`send`, so concurrent single publishes share produce requests); a
larger call adds its records to an open record batch per partition, handed over whole
(`send_batch`) when the partition's previous batch is on its way: one future per batch
instead of one per event, and concurrent batch publishes still share produce requests.

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
from pipeline.settings import Settings
from pipeline.topics import EVENTS
from pipeline.view import DestinationView

# None: acknowledged; else the KafkaError that left the event unconfirmed.
Outcome = Exception | None
# Calls with more events than this write record batches of their own.
SEND_ONE_BY_ONE_AT_MOST = 8

_KEY_PARTITIONER = DefaultPartitioner()
# Under the broker's default message.max.bytes (1 MiB).
MAX_BATCH_BYTES = 512 * 1024


class _OpenBatch:
    """Records for one partition not handed to the producer yet. Publishes arriving while
    the partition's previous batch waits for its turn add theirs, so concurrent requests
    share record batches (and produce requests) as `send` would make them share."""

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.acknowledged: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class _Partitions:
    """Per producer: each partition's open batch and whose turn it is to hand one over,
    and the next partition of an event that may go anywhere."""

    def __init__(self) -> None:
        self.open: dict[int, _OpenBatch] = {}
        # aiokafka queues one batch per partition and lets other senders of batches poll
        # for the slot with a timeout that shrinks on every wake-up; they take turns here.
        self.turns: dict[int, asyncio.Lock] = {}
        self.handing_over: set[asyncio.Task[None]] = set()
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
    """Add the records to their partitions' open batches; each event's outcome is its
    batch's."""
    outcomes: list[Outcome] = [None] * len(records)
    waits: list[tuple[list[int], asyncio.Future[None]]] = []
    for partition, positions in by_partition.items():
        batch, held = state.open.get(partition), list[int]()
        for position in positions:
            key, value = records[position]
            if _took(batch, key, value):
                held.append(position)
                continue
            if batch is not None and held:  # full (aiokafka closed it): it goes as it is
                waits.append((held, batch.acknowledged))
            batch, held = _open(producer, state, partition), []
            if _took(batch, key, value):
                held.append(position)
            else:
                outcomes[position] = MessageSizeTooLargeError()
        if batch is not None and held:
            waits.append((held, batch.acknowledged))
    for held, acknowledged in waits:
        outcome = await _confirmed(acknowledged)
        for position in held:
            outcomes[position] = outcome
    return outcomes


def _took(batch: _OpenBatch | None, key: bytes, value: bytes) -> bool:
    """Whether `batch` took the record; a full batch refuses it (and aiokafka closes it)."""
    if batch is None:
        return False
    return batch.builder.append(key=key, value=value, timestamp=None) is not None


def _open(producer: AIOKafkaProducer, state: _Partitions, partition: int) -> _OpenBatch:
    """A new open batch for `partition`, handed over when the partition's turn comes."""
    batch = state.open[partition] = _OpenBatch(producer.create_batch())
    task = asyncio.get_running_loop().create_task(_hand_over(producer, state, partition, batch))
    state.handing_over.add(task)
    task.add_done_callback(state.handing_over.discard)
    return batch


async def _hand_over(
    producer: AIOKafkaProducer, state: _Partitions, partition: int, batch: _OpenBatch
) -> None:
    """Send `batch` once the partition's previous one is on its way; resolve its future
    with the broker's answer."""
    try:
        async with state.turns.setdefault(partition, asyncio.Lock()):
            if state.open.get(partition) is batch:
                del state.open[partition]  # later records start the next batch
            batch.builder.close()
            sent = await producer.send_batch(batch.builder, EVENTS, partition=partition)
        await sent
    except Exception as exc:  # every publish waiting on the batch gets it
        batch.acknowledged.set_exception(exc)
    else:
        batch.acknowledged.set_result(None)


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


def event_producer(settings: Settings, client_id: str) -> AIOKafkaProducer:
    """The producer of `events` for the API and the sources' ingest (api/sources/): acks=all,
    idempotent; not started."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.api_linger_ms,  # the publisher waits for the acknowledgement
        # A batch publish writes one record batch per partition: room for 1,000 events of a
        # few hundred bytes, or one of the largest allowed, in one.
        max_batch_size=max(MAX_BATCH_BYTES, settings.max_event_bytes + 16 * 1024),
        request_timeout_ms=10_000,
        client_id=client_id,
    )
