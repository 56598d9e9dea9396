"""/v2/event-destinations: create, list and read destinations."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError

from api import validation
from api.app_keys import PRODUCER, SEALER, SETTINGS, VIEW
from api.auth import MANAGE, Principal
from api.body import read_json
from api.errors import ApiError, RequestValidationError, forbidden, not_found, unavailable
from api.responses import json_response, principal_of
from pipeline import ids
from pipeline.signing import generate_secret
from pipeline.timeutil import now_iso
from pipeline.topics import DESTINATION_CHANGES
from pipeline.view import ViewTimeout

routes = web.RouteTableDef()


def _manager(request: web.Request) -> Principal:
    principal = principal_of(request)
    if not principal.may(MANAGE):
        raise forbidden()
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
        record["type"]: dict(record.get("config") or {}),
        "created_at": record["created_at"],
        "updated_at": record["updated_at"],
        "request_id": request_id,
    }


async def append_change(
    request: web.Request, destination_id: str, change: dict[str, Any]
) -> dict[str, Any]:
    """Write a change record and wait until this process's view has folded it."""
    view = request.app[VIEW]
    change_id = ids.new_id(ids.CHANGE)
    change = {"change_id": change_id, "at": now_iso(), **change}
    folded = view.expect_change(change_id)
    try:
        await request.app[PRODUCER].send_and_wait(
            DESTINATION_CHANGES, orjson.dumps(change), key=destination_id.encode()
        )
        return await view.wait_change(folded, change_id, request.app[SETTINGS].view_wait_timeout_s)
    except KafkaError as exc:
        folded.cancel()
        raise unavailable("The event broker is unreachable; nothing was changed.") from exc
    except ViewTimeout as exc:
        raise unavailable("The change was accepted but is not visible yet; read it again.") from exc


async def _stamp(request: web.Request) -> dict[int, int]:
    try:
        return await request.app[VIEW].stamp()
    except KafkaError as exc:
        raise unavailable("The event broker is unreachable; nothing was changed.") from exc


@routes.post("/v2/event-destinations")
async def create(request: web.Request) -> web.Response:
    """Create a destination (201); a generated webhook secret is returned this once."""
    principal = _manager(request)
    fields = validation.create_destination(await read_json(request), request.app[SETTINGS])
    destination_id = fields["id"] or ids.new_id(ids.DESTINATION)
    if request.app[VIEW].get(destination_id) is not None:
        raise ApiError(
            409,
            "resource_already_exists",
            f"A destination with id '{destination_id}' already exists.",
            field="id",
        )
    credentials = fields["credentials"]
    generated_secret = None
    if fields["type"] == "webhook" and "secret" not in credentials:
        generated_secret = credentials["secret"] = generate_secret()
    sealed = request.app[SEALER].seal(credentials, destination_id) if credentials else None
    # Events published before this call began are not routed to the new destination.
    routes_from = {str(p): o for p, o in (await _stamp(request)).items()}
    record = await append_change(
        request,
        destination_id,
        {
            "op": "create",
            "fields": {
                "tenant": principal.tenant,
                "name": fields["name"],
                "description": fields["description"],
                "type": fields["type"],
                "events": fields["events"],
                "metadata": fields["metadata"],
                "config": fields["config"],
                "sealed": sealed,
                "routes_from": routes_from,
            },
        },
    )
    if not record.get("change_ok"):
        raise ApiError(
            409,
            "resource_already_exists",
            f"A destination with id '{destination_id}' already exists.",
            field="id",
        )
    body = present(record, request["request_id"])
    if generated_secret is not None:
        body["webhook"]["secret"] = generated_secret
    return json_response(body, status=201)


@routes.get("/v2/event-destinations/{destination_id}")
async def read(request: web.Request) -> web.Response:
    """One destination of the caller's tenant."""
    principal = _manager(request)
    record = request.app[VIEW].get(request.match_info["destination_id"])
    if record is None or record["tenant"] != principal.tenant:
        raise not_found("event destination")
    return json_response(present(record, request["request_id"]))


@routes.get("/v2/event-destinations")
async def list_all(request: web.Request) -> web.Response:
    """The tenant's destinations, newest first, `limit` per page with a cursor."""
    principal = _manager(request)
    limit = _limit(request)
    after = _cursor(request)
    mine = sorted(
        (r for r in request.app[VIEW].all() if r["tenant"] == principal.tenant),
        key=lambda r: (r["created_at"], r["id"]),
        reverse=True,
    )
    if after is not None:
        mine = [r for r in mine if (r["created_at"], r["id"]) < after]
    page, more = mine[:limit], len(mine) > limit
    cursor = None
    if more:
        last = page[-1]
        cursor = base64.urlsafe_b64encode(orjson.dumps([last["created_at"], last["id"]])).decode()
    return json_response(
        {
            "object": "list",
            "data": [present(r, None) for r in page],
            "has_more": more,
            "next_cursor": cursor,
        }
    )


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise RequestValidationError({"limit": ["must be an integer from 1 to 100."]})
    return int(raw)


def _cursor(request: web.Request) -> tuple[str, str] | None:
    raw = request.query.get("cursor")
    if not raw:
        return None
    try:
        created_at, destination_id = orjson.loads(base64.urlsafe_b64decode(raw))
        return str(created_at), str(destination_id)
    except (ValueError, TypeError) as exc:
        raise RequestValidationError({"cursor": ["is not a valid cursor."]}) from exc
