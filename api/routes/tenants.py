"""/v2/tenants: tenants, their API keys and portal sessions, for platform keys only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from api import portal_sessions
from api.app_keys import PORTAL_TOKENS, SETTINGS, TENANTS
from api.auth import PLATFORM, requires
from api.body import read_json
from api.responses import json_response, page_of, synced_view
from api.stable_ids import id_source
from api.tenants import Tenants, key_fields, tenant_fields

routes = web.RouteTableDef()
ITEM = "/v2/tenants/{tenant_id}"


async def _tenants(request: web.Request) -> Tenants:
    """The service, once this process's tenant view has every change that returned anywhere
    before this request."""
    service = request.app[TENANTS]
    await service.sync()
    return service


def present_tenant(record: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    """A tenant record as the API shows it."""
    return {
        "id": record["id"],
        "object": "tenant",
        "name": record["name"],
        "metadata": record.get("metadata") or {},
        "created_at": record["created_at"],
        "updated_at": record["updated_at"],
        "request_id": request_id,
    }


def present_key(record: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    """A key record as the API shows it: never the key, nor its hash."""
    return {
        "id": record["id"],
        "object": "api_key",
        "tenant_id": record["tenant"],
        "role": record["role"],
        "name": record.get("name"),
        "prefix": record["prefix"],
        "created_at": record["created_at"],
        "revoked_at": record.get("revoked_at"),
        "request_id": request_id,
    }


@routes.post("/v2/tenants")
@requires(PLATFORM)
async def create(request: web.Request) -> web.Response:
    """Create a tenant (201), with the platform's id or a generated `ten_…` one."""
    service = await _tenants(request)
    fields = tenant_fields(await read_json(request), create=True)
    record = await service.create(fields, id_source(request))
    return json_response(present_tenant(record, request["request_id"]), status=201)


@routes.get("/v2/tenants")
@requires(PLATFORM)
async def list_all(request: web.Request) -> web.Response:
    """Live tenants, newest first, `limit` per page with a cursor."""
    service = await _tenants(request)
    return page_of(request, service.all(), present_tenant)


@routes.get(ITEM)
@requires(PLATFORM)
async def read(request: web.Request) -> web.Response:
    """One live tenant."""
    service = await _tenants(request)
    return json_response(present_tenant(service.get(_id(request)), request["request_id"]))


@routes.patch(ITEM)
@requires(PLATFORM)
async def update(request: web.Request) -> web.Response:
    """Change a tenant's name or metadata."""
    service = await _tenants(request)
    service.get(_id(request))
    fields = tenant_fields(await read_json(request), create=False)
    record = await service.update(_id(request), fields)
    return json_response(present_tenant(record, request["request_id"]))


@routes.delete(ITEM)
@requires(PLATFORM)
async def delete(request: web.Request) -> web.Response:
    """Delete a tenant: its keys and portal sessions are refused, its destinations
    disabled; its events and deliveries age out with retention."""
    service = await _tenants(request)
    await synced_view(request)  # every destination of the tenant, to disable them all
    disabled = await service.delete(_id(request))
    return json_response(
        {
            "id": _id(request),
            "object": "tenant",
            "deleted": True,
            "disabled_destination_ids": disabled,
            "request_id": request["request_id"],
        }
    )


@routes.post(ITEM + "/api-keys")
@requires(PLATFORM)
async def create_key(request: web.Request) -> web.Response:
    """Mint a key of the tenant (201); the key is in this response only."""
    service = await _tenants(request)
    service.get(_id(request))
    role, name = key_fields(await read_json(request))
    record, key = await service.mint_key(_id(request), role, name)
    return json_response({**present_key(record, request["request_id"]), "key": key}, status=201)


@routes.get(ITEM + "/api-keys")
@requires(PLATFORM)
async def list_keys(request: web.Request) -> web.Response:
    """The tenant's keys, newest first, revoked ones included."""
    service = await _tenants(request)
    return page_of(request, service.keys(_id(request)), present_key)


@routes.delete(ITEM + "/api-keys/{key_id}")
@requires(PLATFORM)
async def revoke_key(request: web.Request) -> web.Response:
    """Revoke a key: refused by every API process within a second."""
    service = await _tenants(request)
    record = await service.revoke_key(_id(request), request.match_info["key_id"])
    return json_response(present_key(record, request["request_id"]))


@routes.post(ITEM + "/portal-sessions")
@requires(PLATFORM)
async def create_portal_session(request: web.Request) -> web.Response:
    """A portal session for the tenant's end customer (201): a URL and its token."""
    service = await _tenants(request)
    tenant_id = service.get(_id(request))["id"]
    body = await read_json(request) if request.body_exists else None
    session = portal_sessions.parse_request(body, request.app[SETTINGS])
    token, claims = request.app[PORTAL_TOKENS].mint(tenant_id, session)
    public_url = request.app[SETTINGS].public_url.rstrip("/")
    expires_at = datetime.fromtimestamp(claims["exp"], UTC)
    return json_response(
        {
            "object": "portal_session",
            "url": f"{public_url}/portal/#token={token}",
            "token": token,
            "expires_at": expires_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "tenant_id": tenant_id,
            "return_url": session.return_url,
            "theme": session.theme,
            "request_id": request["request_id"],
        },
        status=201,
    )


def _id(request: web.Request) -> str:
    return request.match_info["tenant_id"]
