"""Profile the API under one ingest case alone: `python -m bench.ingest_profile BATCH SECONDS`.

`bench.run --profile ingest` records the whole scenario, where batches outweigh single
publishes; this starts the bench stack, runs one case of the ingest scenario (BATCH events
per request: 1 with 32 requests in flight, else 4) for SECONDS under py-spy
(bench.profile), prints the loader's result and the API's CPU per event, and writes the
summary to bench/results/profile-ingest/api-batch<BATCH>.json (the raw stacks stay in
.data/bench/profile/ingest-alone/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import aiohttp

from bench.cluster import Cluster
from bench.context import Bench
from bench.profile import Profiler, summarize
from bench.scenarios.ingest import _publish
from bench.stack import DEFAULT_PORT_OFFSET, ROOT, Stack, cpu_seconds

OUT = ROOT / "bench" / "results" / "profile-ingest"


async def _run(stack: Stack, batch: int, seconds: float) -> tuple[dict[str, object], Path]:
    cluster = Cluster.of(stack)
    await cluster.start()
    try:
        async with aiohttp.ClientSession() as http:
            bench = Bench(stack, cluster, http, quick=False)
            await bench.settle()
            api = stack.pid("api")
            profiler = Profiler({"api": api}, stack.data / "profile" / "ingest-alone")
            cpu_before_s = cpu_seconds(api)
            profiler.start()
            concurrency = 32 if batch == 1 else 4
            requests = 10_000_000  # bounded by the time
            result: dict[str, object] = await _publish(bench, batch, requests, concurrency, seconds)
            profiler.stop()
            cpu_s = cpu_seconds(api) - cpu_before_s
    finally:
        await cluster.stop()
    events_ok = int(str(result["events_ok"]))
    result["api_cpu_ms_per_event"] = round(cpu_s * 1000 / max(1, events_ok), 4)
    return result, profiler.raw_path("api")


def _write(result: dict[str, object], raw: Path, batch: int, out: Path) -> None:
    print(json.dumps(result, indent=2))
    out.mkdir(parents=True, exist_ok=True)
    summary = {"load": result, **summarize(raw.read_text())}
    (out / f"api-batch{batch}.json").write_text(json.dumps(summary, indent=2) + "\n")


def main() -> None:
    """Start the stack, profile one case, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("batch", type=int, help="events per request (1: POST /v2/events)")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--port-offset", type=int, default=DEFAULT_PORT_OFFSET)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    stack = Stack(args.port_offset)
    try:
        stack.start()
        result, raw = asyncio.run(_run(stack, args.batch, args.seconds))
        _write(result, raw, args.batch, args.out)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
