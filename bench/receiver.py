"""The webhook receiver of the benchmarks: counts deliveries and their publish → receive latency.

Run as its own process (`python -m bench.receiver --port P`) so its CPU is not the
orchestrator's. A webhook URL is `/{behaviour}/{group}/{n}`:

- behaviour `ok` answers 200, `fail` answers 500, `slow` sleeps `--slow-s` (longer than the
  bench's delivery timeout) and then answers 200, `flaky` answers 503 to a webhook-id's
  first request and 200 to its retries (scripts/trace_screenshot.py's one retry);
- `group` is what the tallies are kept by (one per scenario case);
- `n` tells destinations apart and is otherwise ignored.

Every tally keeps the count, the distinct `webhook-id`s (duplicates are at-least-once
redeliveries), first and last arrival (wall clock) and, from the event's
`data.sent_at` (the loader's wall clock at publish), the publish → receive latency. For
groups whose behaviour is `fail` it also keeps each webhook-id's arrival times, from which
the retry scenario measures how late each retry came.

`POST /bare` is the ingest ceiling: the least an aiohttp handler can do (read the body,
answer 202 with a small JSON body). It records nothing.

`POST /v1/traces` is an OTLP/HTTP (protobuf) trace receiver: the `traces` scenario points
Herald's exporter here and reads how many spans and traces arrived at `GET /otlp`.

Control: `GET /stats?group=g[&percentiles=1][&arrivals=1]`, `POST /reset?group=g`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvloop
from aiohttp import web

BARE_RESPONSE = orjson.dumps({"id": "evt_bare", "object": "event", "accepted": True})
TALLIES: web.AppKey[dict[str, Tally]] = web.AppKey("tallies", dict)
SLOW_S: web.AppKey[float] = web.AppKey("slow_s", float)
OTLP: web.AppKey[dict[str, Any]] = web.AppKey("otlp", dict)


@dataclass
class Tally:
    """What one group of webhook URLs received."""

    count: int = 0
    ids: set[str] = field(default_factory=set)
    first_at: float | None = None
    last_at: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    arrivals: dict[str, list[float]] | None = None

    def add(self, webhook_id: str, now_s: float, sent_at: float | None) -> None:
        """Count one request that arrived at `now_s` (wall clock)."""
        self.count += 1
        self.ids.add(webhook_id)
        if self.first_at is None:
            self.first_at = now_s
        self.last_at = now_s
        if sent_at is not None:
            self.latencies_ms.append((now_s - sent_at) * 1000)
        if self.arrivals is not None:
            self.arrivals.setdefault(webhook_id, []).append(now_s)

    def summary(self, percentiles: bool, arrivals: bool) -> dict[str, Any]:
        """The tally as JSON; percentiles and per-id arrivals only when asked (they cost)."""
        out: dict[str, Any] = {
            "count": self.count,
            "unique": len(self.ids),
            "first_at": self.first_at,
            "last_at": self.last_at,
        }
        if percentiles:
            out["latency_ms"] = percentile_summary(self.latencies_ms)
        if arrivals and self.arrivals is not None:
            out["arrivals"] = self.arrivals
        return out


def percentile_summary(values: list[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/max (nearest rank) and the count of `values`."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "n": len(ordered),
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": round(ordered[-1], 2),
    }


def _sent_at(body: bytes) -> float | None:
    try:
        value = orjson.loads(body)["data"]["sent_at"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) else None


async def hook(request: web.Request) -> web.Response:
    """One webhook delivery: tally it, then answer as the path's behaviour says."""
    body = await request.read()
    now_s = time.time()
    behaviour = request.match_info["behaviour"]
    tallies = request.app[TALLIES]
    group = request.match_info["group"]
    tally = tallies.get(group)
    if tally is None:
        tally = tallies[group] = Tally(arrivals={} if behaviour == "fail" else None)
    webhook_id = request.headers.get("webhook-id", "")
    retried = webhook_id in tally.ids
    tally.add(webhook_id, now_s, _sent_at(body))
    if behaviour == "fail":
        return web.Response(status=500, text="failing on purpose")
    if behaviour == "flaky" and not retried:
        return web.Response(status=503, text="failing the first attempt on purpose")
    if behaviour == "slow":
        await asyncio.sleep(request.app[SLOW_S])  # past the sender's timeout, on purpose
    return web.Response(status=200)


async def bare(request: web.Request) -> web.Response:
    """The ingest ceiling: read the body, answer 202."""
    await request.read()
    return web.Response(status=202, body=BARE_RESPONSE, content_type="application/json")


async def stats(request: web.Request) -> web.Response:
    """Tallies as JSON: one group (`?group=`) or all of them."""
    percentiles = request.query.get("percentiles") == "1"
    arrivals = request.query.get("arrivals") == "1"
    tallies = request.app[TALLIES]
    wanted = request.query.get("group")
    names = [wanted] if wanted else list(tallies)
    body = {name: tallies.get(name, Tally()).summary(percentiles, arrivals) for name in names}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def reset(request: web.Request) -> web.Response:
    """Forget one group (`?group=`) or every group."""
    tallies = request.app[TALLIES]
    wanted = request.query.get("group")
    if wanted:
        tallies.pop(wanted, None)
    else:
        tallies.clear()
    return web.Response(status=204)


def otlp_spans(body: bytes) -> list[dict[str, Any]]:
    """The spans of an OTLP/HTTP export request (protobuf): name, hex trace, span and parent
    ids, status code, attributes (as strings) and the service that sent them."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = {
                    a.key: a.value.string_value or str(a.value.int_value) for a in span.attributes
                }
                spans.append(
                    {
                        "service": resource.get("service.name"),
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_id": span.parent_span_id.hex(),
                        "status": span.status.code,
                        "start_ns": span.start_time_unix_nano,
                        "attributes": attributes,
                    }
                )
    return spans


async def otlp_traces(request: web.Request) -> web.Response:
    """OTLP/HTTP: count the exported spans and their traces."""
    spans = otlp_spans(await request.read())
    seen = request.app[OTLP]
    seen["spans"] = seen.get("spans", 0) + len(spans)
    seen.setdefault("trace_ids", set()).update(span["trace_id"] for span in spans)
    # An empty ExportTraceServiceResponse: all accepted.
    return web.Response(body=b"", content_type="application/x-protobuf")


async def otlp_stats(request: web.Request) -> web.Response:
    """Spans and distinct traces received over OTLP since the receiver started."""
    seen = request.app[OTLP]
    body = {"spans": seen.get("spans", 0), "traces": len(seen.get("trace_ids", ()))}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def create_app(slow_s: float) -> web.Application:
    """The receiver application."""
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[TALLIES] = {}
    app[SLOW_S] = slow_s
    app[OTLP] = {}
    app.router.add_post("/v1/traces", otlp_traces)
    app.router.add_get("/otlp", otlp_stats)
    app.router.add_post("/bare", bare)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{behaviour:ok|fail|slow|flaky}/{group}/{n}", hook)
    return app


async def serve(port: int, slow_s: float) -> None:
    """Serve on 127.0.0.1:`port` until SIGTERM or SIGINT."""
    runner = web.AppRunner(create_app(slow_s), access_log=None, handle_signals=False)
    await runner.setup()
    # A deep backlog: the ceiling runs open many connections at once.
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    """`python -m bench.receiver --port P [--slow-s S]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slow-s", type=float, default=2.0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.port, args.slow_s))


if __name__ == "__main__":
    main()
