"""A webhook receiver for trying Herald by hand: prints each delivery, answers 200.

.venv/bin/python scripts/echo_receiver.py [port]     (default 9000, on 127.0.0.1)
"""

from __future__ import annotations

import sys

from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    """Print the Standard Webhooks headers and the body."""
    headers = {k: v for k, v in request.headers.items() if k.lower().startswith("webhook-")}
    body = (await request.read()).decode(errors="replace")
    print(request.method, request.path, headers, body, flush=True)
    return web.Response(text="ok")


if __name__ == "__main__":
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 9000)
