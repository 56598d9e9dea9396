"""Recovering after an outage: POST …/recover starts a job, GET …/recoveries/{id} shows it;
`recover_since` on POST …/enable starts one too (api/routes/destinations.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api import recovery
from api.app_keys import DESTINATIONS, RECOVERIES
from api.auth import PORTAL, Principal, requires
from api.body import read_json
from api.errors import ApiError, not_found, unavailable
from api.responses import json_response, principal_of, synced_view
from pipeline.db import DATABASE_ERRORS
from pipeline.destinations import INACTIVE

routes = web.RouteTableDef()
ITEM = "/v2/event-destinations/{destination_id}"


async def start(
    request: web.Request, principal: Principal, destination: dict[str, Any], window: recovery.Window
) -> dict[str, Any]:
    """Start a recovery of the destination's failed deliveries in `window`; the job as shown.
    422 for an inactive destination (nothing would be delivered to it)."""
    if destination["status"] == INACTIVE:
        raise ApiError(
            422, "destination_inactive", "The destination is inactive: enable it to recover."
        )
    try:
        return await request.app[RECOVERIES].create(principal.tenant, destination, window)
    except DATABASE_ERRORS as exc:
        raise _index_unavailable() from exc


@routes.post(ITEM + "/recover")
@requires(PORTAL)
async def recover(request: web.Request) -> web.Response:
    """Re-attempt the destination's deliveries that failed in [since, until), once each, in
    publish order, through its rate limit and circuit breaker (202, the job)."""
    principal = principal_of(request)
    await synced_view(request)
    destination = request.app[DESTINATIONS].get(principal, request.match_info["destination_id"])
    window = recovery.window(
        await read_json(request), "since", "until", request.app[RECOVERIES].max_window_days
    )
    job = await start(request, principal, destination, window)
    return json_response({**job, "request_id": request["request_id"]}, status=202)


@routes.get(ITEM + "/recoveries/{recovery_id}")
@requires(PORTAL)
async def read(request: web.Request) -> web.Response:
    """One recovery of the destination, with its progress."""
    principal = principal_of(request)
    await synced_view(request)
    destination_id = request.match_info["destination_id"]
    request.app[DESTINATIONS].get(principal, destination_id)  # 404 unless ours
    try:
        job = await request.app[RECOVERIES].get(
            principal.tenant, destination_id, request.match_info["recovery_id"]
        )
    except DATABASE_ERRORS as exc:
        raise _index_unavailable() from exc
    if job is None:
        raise not_found("recovery")
    return json_response({**job, "request_id": request["request_id"]})


def _index_unavailable() -> ApiError:
    return unavailable("The delivery log is unreachable right now; nothing was started.")
