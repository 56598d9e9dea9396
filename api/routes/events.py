"""/v2/events: publish (one or a batch), list, read and replay events."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api import chains, validation
from api.acceptance import accept, new_event
from api.app_keys import DB, PRODUCER, SETTINGS, VIEW
from api.auth import PORTAL, PUBLISH, Principal, requires
from api.body import read_json
from api.errors import ApiError, RequestValidationError, not_found, unavailable
from api.index import Query, fetch_one, fetch_page, page_limit, present_event_shown
from api.publishing import publish_each, publish_events
from api.responses import json_response, principal_of, synced_view
from api.stable_ids import Attempt, IdSource, id_source
from pipeline import metrics, tracing

routes = web.RouteTableDef()
MAX_BATCH = 1000


def _accepted(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event["id"],
        "object": "event",
        "type": event["type"],
        "created_at": event["created_at"],
        "ordering_key": event.get("ordering_key"),
    }


UNCONFIRMED = (
    "The event broker did not confirm {what}; it may not have been accepted. Retry with the "
    "same Idempotency-Key (or publish with your own event id) to publish it at most once."
)


@routes.post("/v2/events")
@requires(PUBLISH)
async def publish(request: web.Request) -> web.Response:
    """Publish one event `{type, data, id?}`; 202 once the broker has it (acks=all)."""
    principal = principal_of(request)
    try:
        fields = validation.publish_event(await read_json(request))
        source = id_source(request)
        limit = request.app[SETTINGS].max_event_bytes
        event = new_event(fields, principal.tenant, limit, source, source.now())
    except (ApiError, RequestValidationError):
        metrics.EVENTS_REJECTED.inc()
        raise
    with tracing.publishing({tracing.EVENT_ID: event["id"]}) as headers:
        [failure] = await publish_each(request.app[VIEW], request.app[PRODUCER], [event], headers)
    if failure is not None:
        raise unavailable(UNCONFIRMED.format(what="the event")) from failure
    return json_response({**_accepted(event), "request_id": request["request_id"]}, status=202)


def _batch_items(body: Any) -> list[Any]:
    items = body.get("events") if isinstance(body, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH or set(body) != {"events"}:
        raise RequestValidationError(
            {
                "events": [
                    f"must be a list of 1 to {MAX_BATCH} events, and the only field of the body."
                ]
            }
        )
    return items


def _item(
    index: int, item: Any, tenant: str, limit: int, source: IdSource, now: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One item's result (accepted or rejected) and its event if it is valid."""
    event, errors = accept(item, tenant, limit, source, now, index)
    if event is None:
        return {"index": index, "status": "rejected", "errors": errors}, None
    return {"index": index, "status": "accepted", **_accepted(event)}, event


def _accepted_before(source: IdSource) -> dict[int, dict[str, Any]]:
    """The results an earlier run of this request (same Idempotency-Key) had confirmed."""
    previous = getattr(source, "previous", None)
    if not isinstance(previous, dict):
        return {}
    return {r["index"]: r for r in previous.get("data") or () if r.get("status") == "accepted"}


@routes.post("/v2/events/batch")
@requires(PUBLISH)
async def publish_batch(request: web.Request) -> web.Response:
    """Publish up to 1,000 events `{events: [...]}` in one broker round-trip.

    Each item is validated on its own and `data` reports every item in order: `accepted`
    (the broker confirmed it), `rejected` (invalid, with its errors) or `failed` (the broker
    did not confirm it). A retry with the same Idempotency-Key publishes only what was not
    accepted, under the same ids, and answers for the whole batch.
    """
    principal = principal_of(request)
    items = _batch_items(await read_json(request))
    source = id_source(request)
    limit = request.app[SETTINGS].max_event_bytes
    done = _accepted_before(source)
    now = source.now()  # the batch's events are accepted together
    results: list[dict[str, Any]] = []
    to_send: list[tuple[int, dict[str, Any]]] = []
    for index, item in enumerate(items):
        result, event = _item(index, item, principal.tenant, limit, source, now)
        results.append(done.get(index, result))
        if event is not None and index not in done:
            to_send.append((index, event))
    metrics.EVENTS_REJECTED.inc(sum(r["status"] == "rejected" for r in results))
    with tracing.publishing({"herald.event_count": len(to_send)}) as headers:
        outcomes = await publish_each(
            request.app[VIEW], request.app[PRODUCER], [event for _, event in to_send], headers
        )
    for (index, _), outcome in zip(to_send, outcomes, strict=True):
        if outcome is not None:
            results[index] = _failed(results[index])
    return _batch_response(request, source, results)


def _failed(result: dict[str, Any]) -> dict[str, Any]:
    message = UNCONFIRMED.format(what="this event")
    error = {"code": "service_unavailable", "message": message}
    return {**result, "status": "failed", "error": error}


def _batch_response(
    request: web.Request, source: IdSource, results: list[dict[str, Any]]
) -> web.Response:
    count = {s: sum(r["status"] == s for r in results) for s in ("accepted", "rejected", "failed")}
    if not count["accepted"] and not count["failed"]:
        # Nothing to publish: an ordinary 400, every item's errors by path.
        raise RequestValidationError(
            {
                f"events[{r['index']}].{field}": messages
                for r in results
                for field, messages in r["errors"].items()
            }
        )
    if not count["accepted"]:
        raise unavailable(UNCONFIRMED.format(what="any event of the batch"))
    if count["failed"] and isinstance(source, Attempt):
        source.resume_later()  # the same key publishes the rest
    return json_response(
        {"object": "list", **count, "data": results, "request_id": request["request_id"]},
        status=202,
    )


@routes.get("/v2/events")
async def list_events(request: web.Request) -> web.Response:
    """The tenant's events, newest first; filters `type`, `created_after`, `created_before`."""
    principal = principal_of(request)
    columns = "id, type, data, created_at, ordering_key"
    query = Query("events", columns).where("tenant = $?", principal.tenant)
    event_type = request.query.get("type")
    if event_type is not None:
        query.where("type = $?", event_type)
    limit = page_limit(request)
    rows, cursor, more = await fetch_page(request.app[DB], query.filters(request), limit)
    return json_response(
        {
            "object": "list",
            "data": [present_event_shown(r) for r in rows],
            "has_more": more,
            "next_cursor": cursor,
        }
    )


async def _event_row(request: web.Request, principal: Principal) -> dict[str, Any]:
    row = await fetch_one(
        request.app[DB],
        "select id, type, data, created_at, ordering_key from events where tenant = $1 and id = $2",
        principal.tenant,
        request.match_info["event_id"],
    )
    if row is None:
        raise not_found("event")
    return present_event_shown(row)


@routes.get("/v2/events/{event_id}")
@requires(PORTAL)
async def read_event(request: web.Request) -> web.Response:
    """One event of the tenant."""
    event = await _event_row(request, principal_of(request))
    return json_response({**event, "request_id": request["request_id"]})


@routes.post("/v2/events/{event_id}/replay")
@requires(PORTAL)
async def replay(request: web.Request) -> web.Response:
    """Deliver an event again to its current subscribers, or to one `destination_id`.

    Deliveries keep their ids (`webhook-id`), so a receiver that already has the event can
    tell it is the same one.
    """
    principal = principal_of(request)
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
    skipped = await _restart_chains(request, principal.tenant, record)
    return json_response(
        {
            "id": event["id"],
            "object": "event",
            "replayed": True,
            "destination_id": target,
            "skipped_destination_ids": skipped,
            "request_id": request["request_id"],
        },
        status=202,
    )


async def _restart_chains(request: web.Request, tenant: str, record: dict[str, Any]) -> list[str]:
    """Publish the replay, restarting the event's finished deliveries and skipping the ones
    still being attempted (their chain delivers them; a second would duplicate them).
    Returns the skipped destinations; a replay to one of them alone is a 409."""
    target, pool = record.get("destination_id"), request.app[DB]
    view = request.app[VIEW]
    matched = (
        [view.get(tenant, str(target))]
        if target is not None
        else view.match(tenant, record["type"])
    )
    candidates = {d["id"]: d.get("generation") for d in matched if d is not None}
    taken = await chains.claim(pool, tenant, record["id"], candidates, chains.FINISHED)
    skipped = await chains.live(pool, tenant, record["id"], candidates, taken)
    if target is not None and skipped:
        raise ApiError(
            409,
            "delivery_in_progress",
            "This event's delivery to that destination is still being attempted on its retry "
            "schedule; replay it once the delivery has succeeded or failed.",
            field="destination_id",
        )
    if skipped:
        record["skip_destinations"] = skipped
    try:
        await publish_events(request.app[VIEW], request.app[PRODUCER], [record])
    except ApiError:
        await chains.release(pool, taken)
        raise
    return skipped
