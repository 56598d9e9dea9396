"""Publishing events to Kafka event by event: which ones the broker confirmed, which not."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from api.errors import unavailable
from pipeline import metrics
from pipeline.topics import EVENTS
from pipeline.view import DestinationView

# None: acknowledged; else the KafkaError that left the event unconfirmed.
Outcome = Exception | None


async def publish_each(
    view: DestinationView, producer: AIOKafkaProducer, events: list[dict[str, Any]]
) -> list[Outcome]:
    """Stamp and write `events`; per event, None once the broker acknowledged it (acks=all),
    else the error that left it unconfirmed (it may still have reached the broker).

    The stamp (the `destinations` end offsets, fetched after this call began) makes every
    destination change that returned before it be in force when the events are routed.
    An error that concerns one record (too large) fails that event only; any other stops
    sending, and the events not sent yet fail with it.
    """
    try:
        stamp = {str(p): o for p, o in (await view.stamp()).items()}
    except KafkaError as exc:
        return _count([exc] * len(events))
    pending: list[asyncio.Future[Any] | Exception] = []
    for position, event in enumerate(events):
        try:
            value = orjson.dumps({**event, "route_after": stamp})
            pending.append(await producer.send(EVENTS, value, key=event["id"].encode()))
        except MessageSizeTooLargeError as exc:
            pending.append(exc)
        except KafkaError as exc:
            pending.extend([exc] * (len(events) - position))
            break
    return _count([await _confirmed(item) for item in pending])


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
