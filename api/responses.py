"""Small helpers every route uses to answer."""

from __future__ import annotations

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError

from api.app_keys import SETTINGS, VIEW
from api.auth import Principal
from api.errors import unavailable
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
