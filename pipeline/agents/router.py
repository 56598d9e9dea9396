"""The router agent: events → one delivery per routable subscribed destination."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import faust
import orjson
from faust.types import TableT

from pipeline import ids
from pipeline.timeutil import now_iso
from pipeline.view import DestinationView, ViewTimeout

log = logging.getLogger(__name__)

ENVELOPE_KEYS = ("id", "object", "type", "data", "created_at")


def deliveries_for(
    event: dict[str, Any], view: DestinationView, stamp: dict[int, int] | None = None
) -> list[tuple[bytes, bytes]]:
    """(key, value) of every delivery `event` fans out to; pure apart from the view read."""
    tenant = event["tenant"]
    envelope = {k: event[k] for k in ENVELOPE_KEYS}
    only = event.get("destination_id")
    if only is not None:
        record = view.get(only)
        matches = [record] if record is not None and record["tenant"] == tenant else []
    else:
        matches = view.match(tenant, event["type"], stamp)
    # A replay skips the destinations whose delivery of the event is still being attempted.
    skip = set(event.get("skip_destinations") or ())
    matches = [d for d in matches if d["id"] not in skip]
    out = []
    routed_at = now_iso()
    for destination in matches:
        delivery = {
            "id": ids.derived_id(
                ids.DELIVERY, event["id"], destination["id"], event.get("replay_id", "")
            ),
            "event": envelope,
            "tenant": tenant,
            "destination_id": destination["id"],
            "attempt": 0,
            "due_at": None,
            "routed_at": routed_at,
        }
        out.append((destination["id"].encode(), orjson.dumps(delivery)))
    return out


async def _wait_for_stamp(view: DestinationView, stamp: dict[int, int], timeout_s: float) -> None:
    """Never route an event before the destination changes it was stamped with."""
    while True:
        try:
            await view.wait_offsets(stamp, timeout_s)
            return
        except ViewTimeout:
            log.warning("destination view is behind the event's stamp %s; still waiting", stamp)


DEDUPLICATE_WINDOW_MS = 24 * 3600 * 1000


def first_sighting(
    seen: TableT[bytes, int | None], key: bytes, partition: int, now_ms: int
) -> bool:
    """Record a publisher-chosen event id; False if it was seen in the last 24 h.

    The batch spans partitions, so the changelog partition is given explicitly (it is the
    event's own: `event-ids` is co-partitioned with `events`).
    """
    previous = seen.get(key)
    if previous is not None and now_ms - previous < DEDUPLICATE_WINDOW_MS:
        return False
    seen.data[key] = now_ms
    seen.send_changelog(partition, key, now_ms)
    return True


def register(
    app: faust.App,
    events: faust.TopicT,
    deliveries: faust.TopicT,
    view: DestinationView,
    wait_timeout_s: float,
    seen: TableT[bytes, int | None],
) -> Any:
    """Attach the router agent to `app`."""

    @app.agent(events, name="router")
    async def route(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        await view.ready.wait()
        # take_events (unlike take) keeps each message, for its key and partition.
        async for batch in stream.take_events(1000, within=0.05):  # type: ignore[attr-defined]
            now_ms = int(time.time() * 1000)
            sent: list[Awaitable[Any]] = []
            for message in batch:
                event = orjson.loads(message.value)
                if (
                    event.get("deduplicate")
                    and not event.get("replay")
                    and not first_sighting(seen, message.key, message.message.partition, now_ms)
                ):
                    log.info("duplicate event id dropped", extra={"event_id": event["id"]})
                    continue
                stamp = {int(p): o for p, o in (event.get("route_after") or {}).items()}
                if stamp:
                    await _wait_for_stamp(view, stamp, wait_timeout_s)
                for key, delivery in deliveries_for(event, view, stamp or None):
                    sent.append(await deliveries.send(key=key, value=delivery))
            # The batch's events are acknowledged (so committable) when this yields: only
            # once the broker has every delivery they fanned out to. A send that failed
            # raises here, so its events are routed again rather than lost.
            if sent:
                await asyncio.gather(*sent)
            yield None

    return route
