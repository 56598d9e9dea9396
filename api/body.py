"""Reading request bodies: content type, size and JSON, each failure a clear 4xx."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from api.errors import ApiError, RequestValidationError


def _json_content_type(content_type: str) -> bool:
    return content_type in ("application/json", "text/json") or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_json(request: web.Request) -> Any:
    """The parsed JSON body; 400 for a missing, non-JSON or wrongly typed body, 413 if huge."""
    if not request.body_exists:
        raise RequestValidationError({"body": ["A JSON body is required."]})
    if not _json_content_type(request.content_type):
        raise RequestValidationError(
            {"body": [f"Content-Type must be application/json, not '{request.content_type}'."]}
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise ApiError(
            413,
            "payload_too_large",
            f"The body is larger than {request.app._client_max_size} bytes.",
        ) from exc
    if not raw.strip():
        raise RequestValidationError({"body": ["A JSON body is required."]})
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestValidationError({"body": [f"is not valid JSON: {exc.msg}."]}) from exc
