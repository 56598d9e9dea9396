"""/healthz, /readyz and /metrics for any Herald process (aiohttp routes)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping

import prometheus_client
from aiohttp import web

Check = Callable[[], Awaitable[bool]]
CHECK_TIMEOUT_S = 2.0


async def _run(check: Check) -> bool:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except Exception:  # a failing dependency makes the check fail, never the endpoint
        return False


def health_routes(
    checks: Mapping[str, Check], degradable: Collection[str] = ()
) -> list[web.RouteDef]:
    """Routes: /healthz (process up), /readyz (every check passes, detail per check), /metrics.

    A failing check named in `degradable` reports `degraded` without making the process
    unready (the worker delivers while its index, PostgreSQL, is down).
    """

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        names = list(checks)
        outcomes = await asyncio.gather(*(_run(checks[n]) for n in names))
        results = dict(zip(names, outcomes, strict=True))
        ready = all(ok or n in degradable for n, ok in results.items())
        status = "ready" if all(results.values()) else "degraded" if ready else "not_ready"
        return web.json_response(
            {
                "status": status,
                "checks": {
                    n: "ok" if ok else "degraded" if n in degradable else "failing"
                    for n, ok in results.items()
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
