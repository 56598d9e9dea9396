"""An event as Herald accepts it, from a publish request or a source's record (api/sources/).

Both edges validate with api/validation.py's `publish_event` and build the `events` record
here, so a record a source ingests passes exactly the checks a `POST /v2/events` does.
"""

from __future__ import annotations

from typing import Any

import orjson

from api import validation
from api.errors import ApiError, RequestValidationError
from api.stable_ids import IdSource
from pipeline import ids


def new_event(
    fields: dict[str, Any], tenant: str, limit: int, source: IdSource, now: str, index: int = 0
) -> dict[str, Any]:
    """The event record of validated `fields`, accepted at `now`; its `data` is the
    encoded JSON (an orjson.Fragment), written into the record as it is."""
    size = len(fields["data_json"])
    if size > limit:
        raise ApiError(
            413,
            "payload_too_large",
            f"Event data is {size} bytes; the limit is {limit}.",
            field="data",
        )
    event = {
        "id": fields["id"] or source.id(ids.EVENT, str(index)),
        "object": "event",
        "type": fields["type"],
        "data": orjson.Fragment(fields["data_json"]),
        "created_at": now,
        "tenant": tenant,
    }
    if fields["ordering_key"] is not None:
        # Partitions `events` by (tenant, key) and travels in each delivery's head
        # (api/publishing.py, pipeline/ordering.py).
        event["ordering_key"] = fields["ordering_key"]
    if fields["id"] or source.stable:
        # A publisher-chosen id makes the publish idempotent: the router drops a repeat.
        # So does an Idempotency-Key: a retry re-sends what the broker did not confirm
        # under the same ids, and a copy that did reach it is dropped.
        event["deduplicate"] = True
    return event


def accept(
    body: Any, tenant: str, limit: int, source: IdSource, now: str, index: int = 0
) -> tuple[dict[str, Any] | None, dict[str, list[str]] | None]:
    """A batch item's or a source record's event, or why not: the errors by dotted field
    (the 400 body's `errors`; a too-large `data` is `{"data": [...]}` too)."""
    try:
        return new_event(validation.publish_event(body), tenant, limit, source, now, index), None
    except RequestValidationError as exc:
        return None, exc.errors
    except ApiError as exc:
        return None, {exc.field or "body": [exc.message]}
