"""Small helpers every route uses to answer."""

from __future__ import annotations

import orjson
from aiohttp import web

from api.auth import Principal


def principal_of(request: web.Request) -> Principal:
    """The authenticated caller of a /v2 request."""
    principal: Principal = request["principal"]
    return principal


def json_response(body: object, status: int = 200) -> web.Response:
    """A JSON response serialized with orjson."""
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
