"""Helpers shared by the tests: waiting on conditions with a deadline, a webhook receiver."""

from __future__ import annotations

import asyncio
import time
import zlib
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


async def serve_posts(
    handle: Callable[[web.Request], Awaitable[web.Response]],
) -> tuple[web.AppRunner, str]:
    """A real HTTP server on 127.0.0.1 (a free port) passing every POST to `handle`; its
    runner (to clean up) and its URL."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


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
        self._runner, self.url = await serve_posts(self._handle)
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


def one_in(n: int) -> Callable[[str, int], bool]:
    """A `fail_first` for KeyOrderReceiver picking about one event in `n`, scattered over
    keys and places (not seq % n, which fails every key's same event at once: that many
    failures in a row open the destination's circuit)."""
    return lambda key, seq: zlib.crc32(f"{key}/{seq}".encode()) % n == 0


@dataclass
class KeyOrderReceiver:
    """A real HTTP server on 127.0.0.1 that checks each key's events arrive in order.

    Every event's `data` carries `key` and `seq` (its place in its key's publish order, from
    0). A request is out of order if it brings an event of a key for the first time while an
    earlier `seq` of that key (at the same path) has not been answered 2xx yet. The first
    request of an event whose `seq` `fail_first` picks is answered 503; a key in `hold`
    waits (without an answer) until `release` is set.
    """

    fail_first: Callable[[str, int], bool] = lambda key, seq: False
    hold: set[str] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    # (path, key) → the lowest seq not yet answered 2xx
    next_seq: dict[tuple[str, str], int] = field(default_factory=dict)
    delivered: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    seen: set[tuple[str, str, int]] = field(default_factory=set)
    out_of_order: list[tuple[str, str, int]] = field(default_factory=list)
    duplicates: int = 0
    requests: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> KeyOrderReceiver:
        self._runner, self.url = await serve_posts(self._handle)
        return self

    async def _handle(self, request: web.Request) -> web.Response:
        data = orjson.loads(await request.read())["data"]
        key, seq, line = str(data["key"]), int(data["seq"]), (request.path, str(data["key"]))
        self.requests += 1
        first = (request.path, key, seq) not in self.seen
        self.seen.add((request.path, key, seq))
        if first and self.next_seq.get(line, 0) < seq:
            self.out_of_order.append((request.path, key, seq))
        if key in self.hold and not self.release.is_set():
            await self.release.wait()  # a receiver that does not answer, until released
        if first and self.fail_first(key, seq):
            return web.Response(status=503, text="first attempt fails")
        done = self.delivered.setdefault(line, set())
        if seq in done:
            self.duplicates += 1
        done.add(seq)
        next_seq = self.next_seq.get(line, 0)
        while next_seq in done:
            next_seq += 1
        self.next_seq[line] = next_seq
        return web.Response(text="ok")

    def count(self, path: str) -> int:
        """Events answered 2xx at `path` (each once)."""
        return sum(len(seqs) for (p, _), seqs in self.delivered.items() if p == path)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
