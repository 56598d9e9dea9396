"""Deliveries and their attempts: the delivery log, and retrying a delivery now."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
from aiohttp import web
from aiokafka.errors import KafkaError

from api import chains
from api.app_keys import DB, DESTINATIONS, PRODUCER, VIEW
from api.auth import PORTAL, Principal, requires
from api.errors import ApiError, RequestValidationError, not_found, unavailable
from api.index import (
    DELIVERY_STATUSES,
    Query,
    fetch_all,
    fetch_one,
    fetch_page,
    page_limit,
    present_attempt,
    present_delivery,
    present_event,
)
from api.responses import json_response, principal_of, synced_view
from pipeline import delivery_record, ids
from pipeline.timeutil import now_iso
from pipeline.topics import DELIVERIES

routes = web.RouteTableDef()
COLUMNS = (
    "id, event_id, event_type, destination_id, destination_generation, status, attempts, "
    "last_attempt_at, next_attempt_at, created_at, updated_at"
)


async def _manager(request: web.Request) -> Principal:
    """The caller (its role was checked by the auth middleware), once this process's view
    is current."""
    principal = principal_of(request)
    await synced_view(request)
    return principal


@routes.get("/v2/event-destinations/{destination_id}/event-deliveries")
@requires(PORTAL)
async def list_deliveries(request: web.Request) -> web.Response:
    """A destination's deliveries, newest first; filters status, event_type, time range."""
    principal = await _manager(request)
    destination_id = request.match_info["destination_id"]
    destination = request.app[DESTINATIONS].get(principal, destination_id)  # 404 unless ours
    query = Query("deliveries", COLUMNS).where("tenant = $?", principal.tenant)
    query.where("destination_id = $?", destination_id)
    # Not those of a deleted destination whose id was taken again (null: indexed before
    # generations were recorded).
    query.where(
        "(destination_generation = $? or destination_generation is null)",
        destination.get("generation"),
    )
    status = request.query.get("status")
    if status is not None:
        if status not in DELIVERY_STATUSES:
            raise RequestValidationError(
                {"status": [f"must be one of: {', '.join(DELIVERY_STATUSES)}."]}
            )
        query.where("status = $?", status)
    event_type = request.query.get("event_type")
    if event_type is not None:
        query.where("event_type = $?", event_type)
    limit = page_limit(request)
    rows, cursor, more = await fetch_page(request.app[DB], query.filters(request), limit)
    return json_response(
        {
            "object": "list",
            "data": [present_delivery(r) for r in rows],
            "has_more": more,
            "next_cursor": cursor,
        }
    )


async def _delivery_row(request: web.Request, principal: Principal) -> asyncpg.Record:
    row = await fetch_one(
        request.app[DB],
        f"select {COLUMNS} from deliveries "  # noqa: S608 - constant columns
        "where tenant = $1 and id = $2",
        principal.tenant,
        request.match_info["delivery_id"],
    )
    if row is None:
        raise not_found("event delivery")
    return row


async def _delivery(request: web.Request, principal: Principal) -> dict[str, object]:
    return present_delivery(await _delivery_row(request, principal))


@routes.get("/v2/event-deliveries/{delivery_id}")
@requires(PORTAL)
async def read_delivery(request: web.Request) -> web.Response:
    """One delivery with its attempts, oldest first."""
    delivery = await _delivery(request, await _manager(request))
    attempts = await fetch_all(
        request.app[DB],
        "select id, attempt, outcome, response_status, latency_ms, error, response_body, "
        "created_at from delivery_attempts where delivery_id = $1 order by created_at, id",
        delivery["id"],
    )
    return json_response(
        {
            **delivery,
            "attempts": [present_attempt(a) for a in attempts],
            "request_id": request["request_id"],
        }
    )


def _not_retryable(delivery: dict[str, object]) -> ApiError:
    if delivery["status"] == "succeeded":
        message = "The delivery succeeded: replay the event to deliver it again."
    else:
        message = (
            f"The delivery is {delivery['status']}: it is still being attempted on its retry "
            "schedule, and can be retried once it has failed."
        )
    return ApiError(409, "delivery_not_failed", message)


@routes.post("/v2/event-deliveries/{delivery_id}/retry")
@requires(PORTAL)
async def retry(request: web.Request) -> web.Response:
    """Attempt a failed delivery again now (same delivery id; a new retry schedule if it
    fails). Only a delivery whose chain is over and did not succeed: a second chain beside
    a live one would deliver twice (see api/chains.py)."""
    principal = await _manager(request)
    row = await _delivery_row(request, principal)
    delivery = present_delivery(row)
    if delivery["status"] not in chains.RETRYABLE:
        raise _not_retryable(delivery)
    destination = _destination_of(request, principal, row)
    if destination["status"] == "inactive":
        raise ApiError(
            422, "destination_inactive", "The destination is inactive: enable it before retrying."
        )
    event = await fetch_one(
        request.app[DB],
        "select id, type, data, created_at from events where tenant = $1 and id = $2",
        principal.tenant,
        delivery["event_id"],
    )
    if event is None:
        raise ApiError(422, "event_expired", "The event is past its retention.")
    envelope = present_event(event)
    head = {
        "id": delivery["id"],
        "event": {k: envelope[k] for k in delivery_record.EVENT_HEAD_KEYS},
        "tenant": principal.tenant,
        "destination_id": delivery["destination_id"],
        "destination_generation": destination.get("generation"),
        "attempt": 0,
        "due_at": None,
        "routed_at": now_iso(),
        "manual_retry": True,
    }
    pool, destination_id = request.app[DB], str(delivery["destination_id"])
    candidates = {destination_id: destination.get("generation")}
    taken = await chains.claim(
        pool, principal.tenant, str(delivery["event_id"]), candidates, chains.RETRYABLE
    )
    if delivery["id"] not in taken.previous:  # another call restarted it meanwhile
        raise _not_retryable({**delivery, "status": "retrying"})
    key = ids.scoped(principal.tenant, destination_id).encode()
    try:
        await request.app[PRODUCER].send_and_wait(
            DELIVERIES, delivery_record.frame(head, orjson.dumps(envelope)), key=key
        )
    except KafkaError as exc:
        await chains.release(pool, taken)
        raise unavailable("The event broker is unreachable; nothing was queued.") from exc
    shown = {**delivery, "status": "retrying"}
    return json_response({**shown, "request_id": request["request_id"]}, status=202)


def _destination_of(
    request: web.Request, principal: Principal, row: asyncpg.Record
) -> dict[str, Any]:
    """The live destination a delivery was routed to: the tenant's, of the same generation
    (not a destination created again under the id after the delivery's was deleted)."""
    destination = request.app[VIEW].get(principal.tenant, row["destination_id"])
    generation = row["destination_generation"]
    if destination is None or (
        generation is not None and destination.get("generation") != generation
    ):
        raise ApiError(422, "destination_unusable", "The destination of this delivery was deleted.")
    return destination
