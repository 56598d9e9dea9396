"""GET /openapi.json (the spec) and GET /docs/ (Swagger UI rendering it, with "Try it out").

Swagger UI's files come from npm's swagger-ui-dist at a pinned version, which
scripts/setup.sh unpacks into .cache/swagger-ui (the image: its own copy; the setting
HERALD_SWAGGER_UI_DIR says where); they are served here beside Herald's own page and
initializer (api/docs/), so the page loads nothing from anywhere but this origin.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import orjson
from aiohttp import web

from api.app_keys import SETTINGS
from api.errors import ApiError
from api.openapi import build_spec
from api.routes.portal import PORTAL_HEADERS, StaticFiles, read_static, static_response

routes = web.RouteTableDef()

SWAGGER_UI_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")

# Only this origin's files run and are fetched ("Try it out" calls this origin too); images
# also from data: URLs, Swagger UI's style sheet draws its icons with them.
DOCS_HEADERS = {
    **PORTAL_HEADERS,
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


@functools.cache
def spec_body() -> bytes:
    """The spec serialized once, as served at /openapi.json."""
    return orjson.dumps(build_spec())


@functools.cache
def docs_files(swagger_ui_dir: Path) -> StaticFiles:
    """Herald's page and initializer and Swagger UI's script and style sheet (from
    `swagger_ui_dir`), read once they are all there (until then every call looks again, and
    /docs/ answers 503)."""
    swagger_ui = read_static(swagger_ui_dir, SWAGGER_UI_FILES) if swagger_ui_dir.is_dir() else {}
    missing = set(SWAGGER_UI_FILES) - set(swagger_ui)
    if missing:
        raise ApiError(
            503,
            "docs_unavailable",
            "Swagger UI's files are not installed: run `make setup` (scripts/setup.sh), or "
            "point HERALD_SWAGGER_UI_DIR at an unpacked swagger-ui-dist.",
            error_type="api_error",
        )
    return {**swagger_ui, **read_static(resources.files("api") / "docs")}


@routes.get("/openapi.json")
async def openapi_json(_: web.Request) -> web.Response:
    """The OpenAPI 3.1 spec of the whole API."""
    return web.Response(body=spec_body(), content_type="application/json")


@routes.get("/docs")
async def docs_redirect(_: web.Request) -> web.Response:
    """To /docs/, so the page's relative URLs resolve under it."""
    # Returned, not raised: the middleware turns a raised HTTPException into an error body.
    return web.Response(status=301, headers={"Location": "/docs/"})


@routes.get("/docs/")
async def docs_page(request: web.Request) -> web.Response:
    """Swagger UI's page for /openapi.json."""
    files = docs_files(request.app[SETTINGS].swagger_ui_dir)
    return static_response(files, "index.html", DOCS_HEADERS)


@routes.get("/docs/{file}")
async def docs_asset(request: web.Request) -> web.Response:
    """Swagger UI's script or style sheet, or the page's initializer."""
    files = docs_files(request.app[SETTINGS].swagger_ui_dir)
    return static_response(files, request.match_info["file"], DOCS_HEADERS)
