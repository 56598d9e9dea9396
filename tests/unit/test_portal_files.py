"""The portal's static files (api/routes/portal.py): every file the page loads is served, with
its content type and the portal's Content-Security-Policy, and nothing else is."""

from __future__ import annotations

import re

from aiohttp import web
from pytest_aiohttp import AiohttpClient

from api.routes import portal

# What index.html loads, and what each module imports.
REFERENCED = re.compile(r'(?:src|href)="([a-z]+\.(?:js|css))"|from "\./([a-z]+\.js)"')


def _referenced() -> set[str]:
    names = set()
    for body, _ in portal.portal_files().values():
        for match in REFERENCED.finditer(body.decode()):
            names.add(match.group(1) or match.group(2))
    return names


def test_every_file_the_page_loads_is_one_it_serves() -> None:
    files = portal.portal_files()
    assert {"index.html", "app.js", "app.css"} <= set(files)
    assert _referenced() <= set(files)
    # Every module is reached from the page (none left behind unused).
    assert _referenced() | {"index.html"} == set(files)


async def test_the_files_are_served_with_their_type_and_policy(
    aiohttp_client: AiohttpClient,
) -> None:
    app = web.Application()
    app.add_routes(portal.routes)
    client = await aiohttp_client(app)
    redirect = await client.get("/portal", allow_redirects=False)
    assert (redirect.status, redirect.headers["Location"]) == (301, "/portal/")
    page = await client.get("/portal/")
    assert page.status == 200 and page.content_type == "text/html"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    for name, expected in (("app.js", "text/javascript"), ("app.css", "text/css")):
        response = await client.get(f"/portal/{name}")
        assert (response.status, response.content_type) == (200, expected)
    for missing in ("nope.js", "..%2Fopenapi.yaml", "index.htm"):
        assert (await client.get(f"/portal/{missing}")).status == 404
