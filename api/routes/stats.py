"""Delivery statistics: GET /v2/stats (the tenant's) and GET …/{id}/stats (a destination's)."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from api.app_keys import DB, DESTINATIONS
from api.auth import PORTAL, requires
from api.responses import json_response, principal_of, synced_view
from api.stats import StatsRequest, read_stats

routes = web.RouteTableDef()


@routes.get("/v2/stats")
@requires(PORTAL)
async def tenant_stats(request: web.Request) -> web.Response:
    """The tenant's events, deliveries and attempts over a range, in buckets."""
    principal = principal_of(request)
    query = StatsRequest.parse(request, datetime.now(UTC))
    body = await read_stats(request.app[DB], principal.tenant, query, None)
    return json_response({**body, "request_id": request["request_id"]})


@routes.get("/v2/event-destinations/{destination_id}/stats")
@requires(PORTAL)
async def destination_stats(request: web.Request) -> web.Response:
    """One destination's deliveries and attempts over a range, in buckets (not those of a
    deleted destination whose id was taken again)."""
    principal = principal_of(request)
    await synced_view(request)
    destination_id = request.match_info["destination_id"]
    destination = request.app[DESTINATIONS].get(principal, destination_id)  # 404 unless ours
    query = StatsRequest.parse(request, datetime.now(UTC))
    generation = destination.get("generation") or ""
    body = await read_stats(request.app[DB], principal.tenant, query, (destination_id, generation))
    return json_response(
        {**body, "destination_id": destination_id, "request_id": request["request_id"]}
    )
