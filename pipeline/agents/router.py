"""The router agent: events → one delivery per routable subscribed destination."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn

import faust
import orjson
from faust.types import TableT
from opentelemetry.trace import Span

from pipeline import delivery_record, ids, tracing
from pipeline.agents.take import take_ready
from pipeline.dedupe import Sightings, marker_key
from pipeline.delivery_record import ORDERING_KEY
from pipeline.supervision import exit_process
from pipeline.timeutil import now_iso
from pipeline.tracing import Headers
from pipeline.view import DestinationView, ViewTimeout

log = logging.getLogger(__name__)

ENVELOPE_KEYS = ("id", "object", "type", "data", "created_at")
SEND_FIRST_BACKOFF_S = 0.1
SEND_MAX_BACKOFF_S = 5.0
MAX_BATCH = 1000  # events routed (and acknowledged) together at most
# A delivery record to send: key, value, and its headers (the event's trace context, or None).
Record = tuple[bytes, bytes, Headers | None]


def delivery_id(event: dict[str, Any], destination: dict[str, Any]) -> str:
    """The stable id of `event`'s delivery to `destination` (its `webhook-id`).

    Routed again after a crash, or replayed, the same event keeps it. It names the tenant
    and the destination's generation (one tenant's `evtd_x` is not another's, nor the same
    id created again after a delete), and the event's acceptance time: a publisher-chosen
    event id reused after the 24 h dedupe window is a new event with new delivery ids.
    """
    return ids.derived_id(
        ids.DELIVERY,
        event["id"],
        event["tenant"],
        destination["id"],
        destination.get("generation") or "",
        event.get("created_at") or "",
        event.get("replay_id", ""),
    )


def deliveries_for(
    event: dict[str, Any], view: DestinationView, stamp: dict[int, int] | None = None
) -> list[tuple[bytes, bytes]]:
    """(key, value) of every delivery `event` fans out to; pure apart from the view read.

    A delivery is keyed `tenant/destination id` and names the destination's generation,
    so the runner drops it if that destination is deleted, even if the id is created again.
    """
    tenant = event["tenant"]
    envelope = {k: event[k] for k in ENVELOPE_KEYS}
    only = event.get("destination_id")
    if only is not None:  # a test event, or a replay to one destination: whatever its filter
        record = view.get(tenant, only)
        matches = [record] if record is not None else []
    else:
        # The event is parsed already: content filters read its `type` and `data` as is.
        matches = view.match(tenant, event["type"], stamp, event)
    # A replay skips the destinations whose delivery of the event is still being attempted.
    skip = set(event.get("skip_destinations") or ())
    matches = [d for d in matches if d["id"] not in skip]
    out: list[tuple[bytes, bytes]] = []
    if not matches:
        return out
    # The request body, encoded once for every destination (the runner sends it as is).
    body = orjson.dumps(envelope)
    event_head = {k: envelope[k] for k in delivery_record.EVENT_HEAD_KEYS}
    routed_at = now_iso()
    # Every delivery of a keyed event carries the key; the runner keeps its order where the
    # destination asks for it (pipeline/ordering.py). This partition's deliveries are sent
    # in event order, and the producer keeps that order within each `deliveries` partition.
    ordering_key = event.get("ordering_key")
    for destination in matches:
        head = {
            "id": delivery_id(event, destination),
            "event": event_head,
            "tenant": tenant,
            "destination_id": destination["id"],
            "destination_generation": destination.get("generation"),
            "attempt": 0,
            "due_at": None,
            "routed_at": routed_at,
        }
        if ordering_key is not None:
            head[ORDERING_KEY] = ordering_key
        key = ids.scoped(tenant, destination["id"]).encode()
        out.append((key, delivery_record.frame(head, body)))
    return out


async def _wait_for_stamp(view: DestinationView, stamp: dict[int, int], timeout_s: float) -> None:
    """Never route an event before the destination changes it was stamped with."""
    while True:
        try:
            await view.wait_offsets(stamp, timeout_s)
            return
        except ViewTimeout:
            log.warning("destination view is behind the event's stamp %s; still waiting", stamp)


async def send_all(
    topic: Any,
    records: Sequence[Record],
    give_up_s: float,
    on_give_up: Callable[[], NoReturn] = exit_process,
) -> None:
    """Send every record and wait for the broker's acknowledgements, sending the failed
    ones again with backoff; if the broker has not taken them all within `give_up_s` of
    the first failure, `on_give_up` (exit the process: the batch is never acknowledged,
    so a restarted worker routes it again)."""
    loop = asyncio.get_running_loop()
    pending, delay_s, deadline = list(records), SEND_FIRST_BACKOFF_S, None
    while True:
        pending = await _send_once(topic, pending)
        if not pending:
            return
        deadline = deadline or loop.time() + give_up_s
        if loop.time() >= deadline:
            log.critical("the broker did not take %d deliveries; exiting", len(pending))
            on_give_up()
        log.warning("%d delivery sends failed; again in %.1fs", len(pending), delay_s)
        await asyncio.sleep(delay_s)
        delay_s = min(delay_s * 2, SEND_MAX_BACKOFF_S)


async def _send_once(topic: Any, records: list[Record]) -> list[Record]:
    """Send each record once; the ones the broker did not acknowledge."""
    failed, sent = [], []
    for record in records:
        key, value, headers = record
        try:
            sent.append((record, await topic.send(key=key, value=value, headers=headers)))
        except Exception as exc:  # the agent's edge: whatever the producer raises is retried
            log.warning("delivery send failed: %r", exc)
            failed.append(record)
    outcomes = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
    refused = [(record, outcome) for (record, _), outcome in zip(sent, outcomes, strict=True)
               if isinstance(outcome, BaseException)]  # fmt: skip
    if refused:  # the broker's reason, once per round (the producer itself logs none)
        log.warning("%d delivery sends were not acknowledged: %r", len(refused), refused[0][1])
    return failed + [record for record, _ in refused]


def register(
    app: faust.App,
    events: faust.TopicT,
    deliveries: faust.TopicT,
    view: DestinationView,
    wait_timeout_s: float,
    seen: TableT[bytes, int | None],
    send_give_up_s: float,
) -> Any:
    """Attach the router agent to `app`."""

    @app.agent(events, name="router")
    async def route(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        await view.ready.wait()
        output = Output(
            app.producer, deliveries.get_topic_name(), seen.changelog_topic.get_topic_name()
        )
        sightings = Sightings(seen.data, output.mark)
        stamps = Stamps(view, wait_timeout_s)
        traced = tracing.enabled()
        # Each message is kept, for its key and partition. A batch is what is already
        # waiting (up to 1000 events), handed over at once: no batching window, so at low
        # rates an event is routed as soon as it is fetched, and at high rates the events
        # that queued while the previous batch's sends were awaited make the next batch.
        async for batch in take_ready(stream, MAX_BATCH):
            now_ms = int(time.time() * 1000)
            records: list[Record] = []
            spans: list[Span] = []
            for message in batch:
                event = orjson.loads(message.value)
                if not _first_sighting(sightings, event, message.message.partition, now_ms):
                    log.info("duplicate event id dropped", extra={"event_id": event["id"]})
                    continue
                stamp = await stamps.reached(event.get("route_after"))
                found = deliveries_for(event, view, stamp)
                headers = None
                if traced:  # the event's route span: its deliveries carry its context
                    span, headers = tracing.start_route(message.message.headers, event)
                    spans.append(span)
                records += [(key, value, headers) for key, value in found]
            # The batch's events are acknowledged (so committable) when this yields: only
            # once the broker has every delivery they fanned out to. Its dedupe markers are
            # written only then, so a crash before cannot make an event its own duplicate.
            try:
                await send_all(output, records, send_give_up_s)
            except BaseException:
                sightings.forget_batch()
                raise
            for span in spans:  # each event's route ends with its deliveries acknowledged
                span.end()
            sightings.commit(now_ms)
            await output.write_markers()
            yield None

    return route


class Stamps:
    """The router's waits for its view to reach the stamps of events (the `destinations`
    offsets each was published at). The last stamp reached is remembered: the events of a
    publish, or of a busy moment, share theirs, and the view only reads forward."""

    def __init__(self, view: DestinationView, timeout_s: float) -> None:
        self._view = view
        self._timeout_s = timeout_s
        self._last_raw: object = object()  # equal to no stamp
        self._last: dict[int, int] | None = None

    async def reached(self, raw: dict[str, int] | None) -> dict[int, int] | None:
        """The event's stamp (None if it has none) once the view has read up to it."""
        if raw == self._last_raw:
            return self._last
        stamp = {int(p): o for p, o in raw.items()} if raw else None
        if stamp:
            await _wait_for_stamp(self._view, stamp, self._timeout_s)
        self._last_raw, self._last = raw, stamp
        return stamp


class Output:
    """The router's records, sent through the app's producer itself.

    Faust's `Topic.send` and the table's `send_changelog` (whose `send_soon` buffer the
    consumer flushes before it hands over each fetched record) wrap every record in futures,
    sensors and a buffer of their own: the router profiled at a third of its CPU in them
    (bench/results/profile-router/). The deliveries go straight to the producer, and so do
    the `event-ids` changelog records of the table's markers, serialized as the table does
    (raw key, JSON value), to the changelog partition of the event's own partition.
    """

    def __init__(self, producer: Any, deliveries_topic: str, markers_topic: str) -> None:
        self._producer = producer
        self._deliveries_topic = deliveries_topic
        self._markers_topic = markers_topic
        self._markers: list[tuple[int, bytes, int]] = []
        self._confirming: set[asyncio.Task[None]] = set()

    async def send(self, key: bytes, value: bytes, headers: Headers | None) -> Any:
        """Send one delivery record; the future of the broker's acknowledgement."""
        return await self._producer.send(self._deliveries_topic, key, value, None, None, headers)

    def mark(self, partition: int, key: bytes, seen_ms: int) -> None:
        """A marker to write with the next `write_markers` (Sightings' changelog writer)."""
        self._markers.append((partition, key, seen_ms))

    async def write_markers(self) -> None:
        """Send the markers of a routed batch to the table's changelog without awaiting
        their acknowledgement (as the table's own writes): a marker lost with its worker
        only lets a repeat of its id through, delivered under the same delivery ids."""
        futures = [
            await self._producer.send(
                self._markers_topic, key, orjson.dumps(seen_ms), partition, None, None
            )
            for partition, key, seen_ms in self._markers
        ]
        self._markers.clear()
        if futures:
            task = asyncio.ensure_future(_confirm_markers(futures))
            self._confirming.add(task)
            task.add_done_callback(self._confirming.discard)


async def _confirm_markers(futures: list[asyncio.Future[Any]]) -> None:
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    if failed:
        log.warning("%d dedupe markers were not written: %r", len(failed), failed[0])


def _first_sighting(
    sightings: Sightings, event: dict[str, Any], partition: int, now_ms: int
) -> bool:
    """True unless the event is a repeat of a publisher-chosen id within the window."""
    if not event.get("deduplicate") or event.get("replay"):
        return True
    return sightings.first(marker_key(event["tenant"], event["id"]), partition, now_ms)
