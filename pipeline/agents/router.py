"""The router agent: events → one delivery per routable subscribed destination."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import faust
import orjson

from pipeline import ids
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
    out = []
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


def register(
    app: faust.App,
    events: faust.TopicT,
    deliveries: faust.TopicT,
    view: DestinationView,
    wait_timeout_s: float,
) -> Any:
    """Attach the router agent to `app`."""

    @app.agent(events, name="router")
    async def route(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        await view.ready.wait()
        async for batch in stream.take(1000, within=0.05):
            for value in batch:
                event = orjson.loads(value)
                stamp = {int(p): o for p, o in (event.get("route_after") or {}).items()}
                if stamp:
                    await _wait_for_stamp(view, stamp, wait_timeout_s)
                for key, delivery in deliveries_for(event, view, stamp or None):
                    # Attached to the current event: Faust produces it before it commits
                    # the source offset, so a crash re-routes rather than loses it.
                    await deliveries.send(key=key, value=delivery)
            yield None

    return route
