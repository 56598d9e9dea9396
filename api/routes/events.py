"""/v2/events: publish an event; 202 only once the broker has it (acks=all)."""

from __future__ import annotations

import orjson
from aiohttp import web

from api import validation
from api.app_keys import PRODUCER, SETTINGS, VIEW
from api.auth import PUBLISH
from api.body import read_json
from api.destinations import publish_events
from api.errors import ApiError, forbidden
from api.responses import json_response, principal_of
from pipeline import ids
from pipeline.timeutil import now_iso

routes = web.RouteTableDef()


@routes.post("/v2/events")
async def publish(request: web.Request) -> web.Response:
    """Publish one event `{type, data, id?}`."""
    principal = principal_of(request)
    if not principal.may(PUBLISH):
        raise forbidden()
    fields = validation.publish_event(await read_json(request))
    data = orjson.dumps(fields["data"])
    limit = request.app[SETTINGS].max_event_bytes
    if len(data) > limit:
        raise ApiError(
            413,
            "payload_too_large",
            f"Event data is {len(data)} bytes; the limit is {limit}.",
            field="data",
        )
    event = {
        "id": fields["id"] or ids.new_id(ids.EVENT),
        "object": "event",
        "type": fields["type"],
        "data": fields["data"],
        "created_at": now_iso(),
        "tenant": principal.tenant,
    }
    await publish_events(request.app[VIEW], request.app[PRODUCER], [event])
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
