"""GET /portal/…: the customer portal's static files (api/portal/), public like /docs.

The page itself holds no secret: it reads a portal session token from its URL fragment and
calls the /v2 API with it, where the auth middleware checks every request.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web

routes = web.RouteTableDef()

CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
StaticFiles = dict[str, tuple[bytes, str]]  # file name → (body, content type)

# The portal's own files only: no inline script or style, API calls to this origin, the
# platform's logo from any https origin (the one thing fetched from elsewhere, optional).
PORTAL_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def read_static(folder: Traversable, names: Iterable[str] | None = None) -> StaticFiles:
    """The files of `folder` with a known content type (only `names`, if given), by name;
    also called by api/routes/docs.py for Swagger UI's files."""
    files = {}
    for entry in folder.iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        wanted = names is None or entry.name in names
        if wanted and entry.is_file() and suffix in CONTENT_TYPES:
            files[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    return files


def static_response(files: StaticFiles, name: str, headers: dict[str, str]) -> web.Response:
    """The file `name` of `files` with `headers`, or a 404."""
    found = files.get(name)
    if found is None:
        raise web.HTTPNotFound()
    body, content_type = found
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)


@functools.cache
def portal_files() -> StaticFiles:
    """Every file of api/portal/ by name, with its content type, read once."""
    return read_static(resources.files("api") / "portal")


def _file_response(name: str) -> web.Response:
    return static_response(portal_files(), name, PORTAL_HEADERS)


@routes.get("/portal")
async def portal_redirect(_: web.Request) -> web.Response:
    """To /portal/, so the page's relative URLs (app.js, app.css) resolve under it."""
    # Returned, not raised: the middleware turns a raised HTTPException into an error body.
    return web.Response(status=301, headers={"Location": "/portal/"})


@routes.get("/portal/")
async def portal_page(_: web.Request) -> web.Response:
    """The portal's page."""
    return _file_response("index.html")


@routes.get("/portal/{file}")
async def portal_asset(request: web.Request) -> web.Response:
    """One of the portal's scripts or style sheets."""
    return _file_response(request.match_info["file"])
