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

from pipeline import delivery_record, ids
from pipeline.agents.take import take_ready
from pipeline.dedupe import Sightings, marker_key
from pipeline.supervision import exit_process
from pipeline.timeutil import now_iso
from pipeline.view import DestinationView, ViewTimeout

log = logging.getLogger(__name__)

ENVELOPE_KEYS = ("id", "object", "type", "data", "created_at")
SEND_FIRST_BACKOFF_S = 0.1
SEND_MAX_BACKOFF_S = 5.0
MAX_BATCH = 1000  # events routed (and acknowledged) together at most


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
    if only is not None:
        record = view.get(tenant, only)
        matches = [record] if record is not None else []
    else:
        matches = view.match(tenant, event["type"], stamp)
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
    records: Sequence[tuple[bytes, bytes]],
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


async def _send_once(topic: Any, records: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Send each record once; the ones the broker did not acknowledge."""
    failed, sent = [], []
    for key, value in records:
        try:
            sent.append(((key, value), await topic.send(key=key, value=value)))
        except Exception as exc:  # the agent's edge: whatever the producer raises is retried
            log.warning("delivery send failed: %r", exc)
            failed.append((key, value))
    outcomes = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
    failed += [record for (record, _), outcome in zip(sent, outcomes, strict=True)
               if isinstance(outcome, BaseException)]  # fmt: skip
    return failed


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
        sightings = Sightings(seen.data, seen.send_changelog)
        # Each message is kept, for its key and partition. A batch is what is already
        # waiting (up to 1000 events), handed over at once: no batching window, so at low
        # rates an event is routed as soon as it is fetched, and at high rates the events
        # that queued while the previous batch's sends were awaited make the next batch.
        async for batch in take_ready(stream, MAX_BATCH):
            now_ms = int(time.time() * 1000)
            records: list[tuple[bytes, bytes]] = []
            for message in batch:
                event = orjson.loads(message.value)
                if not _first_sighting(sightings, event, message.message.partition, now_ms):
                    log.info("duplicate event id dropped", extra={"event_id": event["id"]})
                    continue
                stamp = {int(p): o for p, o in (event.get("route_after") or {}).items()}
                if stamp:
                    await _wait_for_stamp(view, stamp, wait_timeout_s)
                records += deliveries_for(event, view, stamp or None)
            # The batch's events are acknowledged (so committable) when this yields: only
            # once the broker has every delivery they fanned out to. Its dedupe markers are
            # written only then, so a crash before cannot make an event its own duplicate.
            try:
                await send_all(deliveries, records, send_give_up_s)
            except BaseException:
                sightings.forget_batch()
                raise
            sightings.commit(now_ms)
            yield None

    return route


def _first_sighting(
    sightings: Sightings, event: dict[str, Any], partition: int, now_ms: int
) -> bool:
    """True unless the event is a repeat of a publisher-chosen id within the window."""
    if not event.get("deduplicate") or event.get("replay"):
        return True
    return sightings.first(marker_key(event["tenant"], event["id"]), partition, now_ms)
