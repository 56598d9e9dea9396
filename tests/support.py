"""Helpers shared by the tests: waiting on conditions with a deadline, a webhook receiver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiokafka.partitioner import murmur2

from pipeline.ids import scoped
from pipeline.settings import Settings
from pipeline.topics import DELIVERIES, load_specs


async def eventually(
    check: Callable[[], Awaitable[Any]] | Callable[[], Any],
    *,
    timeout_s: float = 20.0,
    interval_s: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll `check` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


def same_partition_ids(count: int, prefix: str = "evtd_t", tenant: str = "dev") -> list[str]:
    """Client-chosen destination ids whose deliveries all land in one `deliveries` partition
    (the producer's default partitioner: murmur2 of the key, `tenant/destination id`)."""
    specs = {s.name: s.partitions for s in load_specs(Settings().topics_file)}
    partitions = specs[DELIVERIES]
    stamp = time.time_ns()
    ids: list[str] = []
    n = 0
    while len(ids) < count:
        candidate = f"{prefix}{stamp}_{n}"
        if (murmur2(scoped(tenant, candidate).encode()) & 0x7FFFFFFF) % partitions == 0:
            ids.append(candidate)
        n += 1
    return ids


@dataclass
class Received:
    """One request a receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records every POST and answers `status`."""

    requests: list[Received] = field(default_factory=list)
    status: int = 200
    delay_s: float = 0.0
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(Received(request.path, dict(request.headers), await request.read()))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # a slow receiver, not synchronization
        return web.Response(status=self.status, text="ok" if self.status < 300 else "nope")

    def bodies(self, path: str | None = None) -> list[dict[str, Any]]:
        """The JSON bodies received (at `path`, if given), oldest first."""
        return [orjson.loads(r.body) for r in self.requests if path is None or r.path == path]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
