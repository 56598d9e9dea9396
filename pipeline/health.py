"""/healthz, /readyz and /metrics for any Herald process (aiohttp routes)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import prometheus_client
from aiohttp import web

Check = Callable[[], Awaitable[bool]]
CHECK_TIMEOUT_S = 2.0


async def _run(check: Check) -> bool:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except Exception:  # a failing dependency makes the check fail, never the endpoint
        return False


def health_routes(checks: Mapping[str, Check]) -> list[web.RouteDef]:
    """Routes: /healthz (process up), /readyz (every check passes, detail per check), /metrics."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        names = list(checks)
        results = await asyncio.gather(*(_run(checks[n]) for n in names))
        ready = all(results)
        return web.json_response(
            {
                "status": "ready" if ready else "not_ready",
                "checks": {
                    n: "ok" if r else "failing" for n, r in zip(names, results, strict=True)
                },
            },
            status=200 if ready else 503,
        )

    async def metrics(_: web.Request) -> web.Response:
        body = prometheus_client.generate_latest(prometheus_client.REGISTRY)
        return web.Response(
            body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )

    return [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)]
