"""Small helpers every route uses to answer."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError

from api.app_keys import SETTINGS, VIEW
from api.auth import Principal
from api.errors import RequestValidationError, unavailable
from api.index import page_limit
from pipeline.view import ViewTimeout


def principal_of(request: web.Request) -> Principal:
    """The authenticated caller of a /v2 request."""
    principal: Principal = request["principal"]
    return principal


def json_response(body: object, status: int = 200) -> web.Response:
    """A JSON response serialized with orjson."""
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def synced_view(request: web.Request) -> None:
    """Make this process's destination view include every change that returned anywhere
    before this request (read-your-writes across API processes)."""
    try:
        await request.app[VIEW].sync(request.app[SETTINGS].view_wait_timeout_s)
    except (KafkaError, ViewTimeout) as exc:
        raise unavailable("Destinations cannot be read consistently right now; retry.") from exc


def page_of(
    request: web.Request,
    records: list[dict[str, Any]],
    present: Callable[[dict[str, Any], str | None], dict[str, Any]],
) -> web.Response:
    """One page of in-memory `records` (sorted newest first by created_at, id) after the
    request's `cursor`, `limit` long, as a list response (destinations, tenants, keys)."""
    limit = page_limit(request)
    after = _cursor(request)
    if after is not None:
        records = [r for r in records if (r["created_at"], r["id"]) < after]
    page, more = records[:limit], len(records) > limit
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


def _cursor(request: web.Request) -> tuple[str, str] | None:
    raw = request.query.get("cursor")
    if not raw:
        return None
    try:
        created_at, record_id = orjson.loads(base64.urlsafe_b64decode(raw))
        return str(created_at), str(record_id)
    except (ValueError, TypeError) as exc:
        raise RequestValidationError({"cursor": ["is not a valid cursor."]}) from exc
