"""/v2/events: publish (one or a batch), list, read and replay events."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from api import validation
from api.app_keys import DB, PRODUCER, SETTINGS, VIEW
from api.auth import MANAGE, PUBLISH, Principal
from api.body import read_json
from api.destinations import publish_events
from api.errors import ApiError, RequestValidationError, forbidden, not_found
from api.index import Query, fetch_one, fetch_page, page_limit, present_event
from api.responses import json_response, principal_of, synced_view
from pipeline import ids, metrics
from pipeline.timeutil import now_iso

routes = web.RouteTableDef()
MAX_BATCH = 1000


def _allowed(request: web.Request, role: str) -> Principal:
    principal = principal_of(request)
    if not principal.may(role):
        raise forbidden()
    return principal


def _new_event(fields: dict[str, Any], tenant: str, limit: int) -> dict[str, Any]:
    size = len(orjson.dumps(fields["data"]))
    if size > limit:
        raise ApiError(
            413,
            "payload_too_large",
            f"Event data is {size} bytes; the limit is {limit}.",
            field="data",
        )
    event = {
        "id": fields["id"] or ids.new_id(ids.EVENT),
        "object": "event",
        "type": fields["type"],
        "data": fields["data"],
        "created_at": now_iso(),
        "tenant": tenant,
    }
    if fields["id"]:
        # A publisher-chosen id makes the publish idempotent: the router drops a repeat.
        event["deduplicate"] = True
    return event


def _accepted(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event["id"],
        "object": "event",
        "type": event["type"],
        "created_at": event["created_at"],
    }


@routes.post("/v2/events")
async def publish(request: web.Request) -> web.Response:
    """Publish one event `{type, data, id?}`; 202 once the broker has it (acks=all)."""
    principal = _allowed(request, PUBLISH)
    try:
        fields = validation.publish_event(await read_json(request))
        event = _new_event(fields, principal.tenant, request.app[SETTINGS].max_event_bytes)
    except (ApiError, RequestValidationError):
        metrics.EVENTS_REJECTED.inc()
        raise
    await publish_events(request.app[VIEW], request.app[PRODUCER], [event])
    return json_response({**_accepted(event), "request_id": request["request_id"]}, status=202)


@routes.post("/v2/events/batch")
async def publish_batch(request: web.Request) -> web.Response:
    """Publish up to 1,000 events `{events: [...]}` in one broker round-trip.

    Each item is validated on its own: the valid ones are published, and `data` reports
    every item in order (`accepted` with its id, or `rejected` with its errors).
    """
    principal = _allowed(request, PUBLISH)
    body = await read_json(request)
    items = body.get("events") if isinstance(body, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH or set(body) != {"events"}:
        raise RequestValidationError(
            {
                "events": [
                    f"must be a list of 1 to {MAX_BATCH} events, and the only field of the body."
                ]
            }
        )
    limit = request.app[SETTINGS].max_event_bytes
    results: list[dict[str, Any]] = []
    events = []
    for index, item in enumerate(items):
        try:
            event = _new_event(validation.publish_event(item), principal.tenant, limit)
        except RequestValidationError as exc:
            results.append({"index": index, "status": "rejected", "errors": exc.errors})
        except ApiError as exc:
            results.append(
                {
                    "index": index,
                    "status": "rejected",
                    "errors": {exc.field or "body": [exc.message]},
                }
            )
        else:
            events.append(event)
            results.append({"index": index, "status": "accepted", **_accepted(event)})
    accepted = len(events)
    metrics.EVENTS_REJECTED.inc(len(items) - accepted)
    if events:
        await publish_events(request.app[VIEW], request.app[PRODUCER], events)
    if not accepted:  # nothing to publish: an ordinary 400, every item's errors by path
        raise RequestValidationError(
            {
                f"events[{r['index']}].{field}": messages
                for r in results
                for field, messages in r["errors"].items()
            }
        )
    return json_response(
        {
            "object": "list",
            "accepted": accepted,
            "rejected": len(items) - accepted,
            "data": results,
            "request_id": request["request_id"],
        },
        status=202,
    )


@routes.get("/v2/events")
async def list_events(request: web.Request) -> web.Response:
    """The tenant's events, newest first; filters `type`, `created_after`, `created_before`."""
    principal = _allowed(request, MANAGE)
    query = Query("events", "id, type, data, created_at").where("tenant = $?", principal.tenant)
    event_type = request.query.get("type")
    if event_type is not None:
        query.where("type = $?", event_type)
    limit = page_limit(request)
    rows, cursor = await fetch_page(request.app[DB], query.filters(request), limit)
    return json_response(
        {
            "object": "list",
            "data": [present_event(r) for r in rows],
            "has_more": cursor is not None,
            "next_cursor": cursor,
        }
    )


async def _event_row(request: web.Request, principal: Principal) -> dict[str, Any]:
    row = await fetch_one(
        request.app[DB],
        "select id, type, data, created_at from events where tenant = $1 and id = $2",
        principal.tenant,
        request.match_info["event_id"],
    )
    if row is None:
        raise not_found("event")
    return present_event(row)


@routes.get("/v2/events/{event_id}")
async def read_event(request: web.Request) -> web.Response:
    """One event of the tenant."""
    event = await _event_row(request, _allowed(request, MANAGE))
    return json_response({**event, "request_id": request["request_id"]})


@routes.post("/v2/events/{event_id}/replay")
async def replay(request: web.Request) -> web.Response:
    """Deliver an event again to its current subscribers, or to one `destination_id`.

    Deliveries keep their ids (`webhook-id`), so a receiver that already has the event can
    tell it is the same one.
    """
    principal = _allowed(request, MANAGE)
    body = await read_json(request) if request.body_exists else {}
    if not isinstance(body, dict) or set(body) - {"destination_id"}:
        raise RequestValidationError({"body": ["may only contain destination_id."]})
    event = await _event_row(request, principal)
    target = body.get("destination_id")
    await synced_view(request)
    if target is not None:
        record = request.app[VIEW].get(principal.tenant, str(target))
        if record is None:
            raise ApiError(
                422,
                "destination_unusable",
                "That destination does not exist (or was deleted).",
                field="destination_id",
            )
    record = {**event, "tenant": principal.tenant, "replay": True}
    if target is not None:
        record["destination_id"] = target
    await publish_events(request.app[VIEW], request.app[PRODUCER], [record])
    return json_response(
        {
            "id": event["id"],
            "object": "event",
            "replayed": True,
            "destination_id": target,
            "request_id": request["request_id"],
        },
        status=202,
    )
