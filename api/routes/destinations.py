"""/v2/event-destinations: parse → call api.destinations → respond."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api import operator_sink, recovery, validation
from api.app_keys import DESTINATIONS, RECOVERIES, SETTINGS
from api.auth import PORTAL, Principal, requires
from api.body import read_json
from api.responses import json_response, page_of, principal_of, synced_view
from api.routes import recoveries
from api.stable_ids import id_source
from pipeline import operator_events

routes = web.RouteTableDef()
ITEM = "/v2/event-destinations/{destination_id}"


async def _manager(request: web.Request) -> Principal:
    """The caller (its role was checked by the auth middleware), once this process's view
    is current."""
    principal = principal_of(request)
    await synced_view(request)
    return principal


def present(record: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    """A folded record as the API shows it: the type's config, never credentials."""
    return {
        "id": record["id"],
        "object": "event_destination",
        "name": record["name"],
        "description": record.get("description"),
        "status": record["status"],
        "status_reason": record.get("status_reason"),
        "type": record["type"],
        "events": record["events"],
        "metadata": record.get("metadata") or {},
        "rate_limit": record.get("rate_limit"),
        "filter": record.get("filter"),
        "ordering": record.get("ordering") or "none",
        record["type"]: _public_config(record.get("config") or {}),
        "created_at": record["created_at"],
        "updated_at": record["updated_at"],
        "request_id": request_id,
    }


def _public_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as shown: custom header names only (a record written before header values
    were sealed still holds them in its config)."""
    shown = dict(config)
    if isinstance(shown.get("custom_headers"), dict):
        shown["custom_headers"] = list(shown["custom_headers"])
    return shown


def _respond(
    request: web.Request, record: dict[str, Any], secret: str | None = None, status: int = 200
) -> web.Response:
    body = present(record, request["request_id"])
    if secret is not None:  # generated or rotated: shown this once
        body["webhook"]["secret"] = secret
    return json_response(body, status=status)


@routes.post("/v2/event-destinations")
@requires(PORTAL)
async def create(request: web.Request) -> web.Response:
    """Create a destination (201); a generated webhook secret is returned this once."""
    principal = await _manager(request)
    fields = validation.create_destination(await read_json(request), request.app[SETTINGS])
    record, secret = await request.app[DESTINATIONS].create(principal, fields, id_source(request))
    await operator_sink.changed(request, operator_events.CREATED, record)
    return _respond(request, record, secret, status=201)


@routes.get(ITEM)
@requires(PORTAL)
async def read(request: web.Request) -> web.Response:
    """One destination of the caller's tenant."""
    principal = await _manager(request)
    return _respond(request, request.app[DESTINATIONS].get(principal, _id(request)))


@routes.patch(ITEM)
@requires(PORTAL)
async def update(request: web.Request) -> web.Response:
    """Change name, description, metadata, events, rate_limit, filter, ordering, type or
    the type's config."""
    principal = await _manager(request)
    service = request.app[DESTINATIONS]
    current = service.get(principal, _id(request))
    changes = validation.update_destination(
        await read_json(request), current["type"], request.app[SETTINGS]
    )
    record, secret = await service.update(principal, _id(request), changes)
    await operator_sink.changed(request, operator_events.UPDATED, record)
    return _respond(request, record, secret)


@routes.delete(ITEM)
@requires(PORTAL)
async def delete(request: web.Request) -> web.Response:
    """Delete; nothing more is delivered to it."""
    await request.app[DESTINATIONS].delete(await _manager(request), _id(request))
    await operator_sink.changed(request, operator_events.DELETED)
    return json_response(
        {
            "id": _id(request),
            "object": "event_destination",
            "deleted": True,
            "request_id": request["request_id"],
        }
    )


@routes.post(ITEM + "/enable")
@requires(PORTAL)
async def enable(request: web.Request) -> web.Response:
    """Set active (or pending_verification if it never delivered successfully); with
    `recover_since` (and `recover_until`) in the body, then start a recovery of the
    deliveries that failed in that window (shown under `recovery`)."""
    principal = await _manager(request)
    window = await _recover_window(request)  # a bad window is a 400 before any change
    record = await request.app[DESTINATIONS].set_enabled(principal, _id(request), True)
    if window is None:
        return _respond(request, record)
    job = await recoveries.start(request, principal, record, window)
    return json_response({**present(record, request["request_id"]), "recovery": job})


async def _recover_window(request: web.Request) -> recovery.Window | None:
    """The recovery window an enable asks for, if its body gives one (a body is optional)."""
    if not request.body_exists:
        return None
    body = await read_json(request)
    if isinstance(body, dict) and not body:
        return None
    max_days = request.app[RECOVERIES].max_window_days
    return recovery.window(body, "recover_since", "recover_until", max_days)


@routes.post(ITEM + "/disable")
@requires(PORTAL)
async def disable(request: web.Request) -> web.Response:
    """Set inactive: nothing is delivered until it is enabled again."""
    record = await request.app[DESTINATIONS].set_enabled(
        await _manager(request), _id(request), False
    )
    return _respond(request, record)


@routes.post(ITEM + "/rotate-secret")
@requires(PORTAL)
async def rotate_secret(request: web.Request) -> web.Response:
    """A new webhook signing secret, returned once; the old one signs alongside for 24 h."""
    record, secret = await request.app[DESTINATIONS].rotate_secret(
        await _manager(request), _id(request)
    )
    return _respond(request, record, secret)


@routes.post(ITEM + "/test")
@requires(PORTAL)
async def send_test(request: web.Request) -> web.Response:
    """Deliver an `event_destination.test` event to this destination only (202)."""
    event = await request.app[DESTINATIONS].send_test(await _manager(request), _id(request))
    return json_response(
        {
            "id": event["id"],
            "object": "event",
            "type": event["type"],
            "created_at": event["created_at"],
            "request_id": request["request_id"],
        },
        status=202,
    )


@routes.get("/v2/event-destinations")
@requires(PORTAL)
async def list_all(request: web.Request) -> web.Response:
    """The tenant's destinations, newest first, `limit` per page with a cursor."""
    records = request.app[DESTINATIONS].all_for(await _manager(request))
    return page_of(request, records, present)


def _id(request: web.Request) -> str:
    return request.match_info["destination_id"]
