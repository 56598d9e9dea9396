"""/healthz, /readyz and /metrics for any Herald process (aiohttp routes)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import prometheus_client
from aiohttp import web

Check = Callable[[], bool]


def health_routes(checks: Mapping[str, Check]) -> list[web.RouteDef]:
    """Routes: /healthz (process up), /readyz (every check passes), /metrics."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        results = {name: bool(check()) for name, check in checks.items()}
        ready = all(results.values())
        return web.json_response(
            {"status": "ready" if ready else "not_ready",
             "checks": {k: "ok" if v else "failing" for k, v in results.items()}},
            status=200 if ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        body = prometheus_client.generate_latest(prometheus_client.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})

    return [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)]
