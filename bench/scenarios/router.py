"""Scenario `router`: events routed per second by one router process, and its CPU per event.

The stack's worker is stopped and N events (50,000 quick, 200,000 full) are written
straight into `events` as the API writes them (stamped with the `destinations` end
offsets, each with a publisher-chosen id, so the `event-ids` dedupe table is written for
every one). Then a router by itself starts (bench/router_alone.py: the worker's Faust app
with the view, without delivering or indexing) and routes the backlog. Its progress is the
Faust group's committed offsets on `events`: the rate and the CPU per event are taken from
its first commit to the commit that leaves no lag, so start-up is not counted (commits come
every 0.5 s). Two cases: (a) a type no destination subscribes to, (b) a type one
destination subscribes to (N deliveries produced, counted from the `deliveries` end offsets).

`--profile` records the router with py-spy as well (bench/results/profile/router-*.json).

Ceiling: a bare aiokafka loop over the same `events` records (decoding each; for (b) also
producing one record per event and awaiting each batch's sends), in a process of its own.

Afterwards the destination is deleted before the stack's worker starts again, so the
deliveries of (b) are dropped, not delivered (the next scenario settles first, as each does).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench.cluster import DestinationSpec
from bench.context import Bench, BenchError, Outcome, Row
from bench.profile import Profiler
from bench.progress import progress
from bench.stack import CEILING_TOPIC, HERALD, PYTHON, ROOT, TENANT, cpu_seconds, terminate
from bench.stack import ready as stack_ready
from pipeline.timeutil import now_iso
from pipeline.topics import DELIVERIES, DESTINATIONS, EVENTS

NONE_TYPE = "router.none"
ONE_TYPE = "router.one"
GROUP = "router"
WORKER_READY_S = 600.0
APP_GROUP = "herald"  # the Faust app id: the router's consumer group
PAD = "x" * 150  # about 350-byte events, as the other scenarios
POLL_S = 0.1
ROUTE_TIMEOUT_S = 600.0


async def run(bench: Bench) -> Outcome:
    """Both cases, then the ceilings; the stack's worker runs again afterwards."""
    count = bench.size(50_000, 200_000)
    outcome = Outcome("router")
    outcome.settings = {"events": count, "event_bytes": 350, "publisher_ids": True}
    [destination] = await bench.create_destinations(
        [DestinationSpec("ok", GROUP, 0, (ONE_TYPE,))], label="router destination"
    )
    await bench.settle()
    stop_worker(bench)
    router: subprocess.Popen[bytes] | None = None
    try:
        for case, event_type in (("none", NONE_TYPE), ("one", ONE_TYPE)):
            await preload(bench, case, count, lambda n, t=event_type: t)
            router = start_router(bench)
            profiler = _profiler(bench, router, case)
            try:
                outcome.figures[case] = await measure(bench, router, count)
            finally:
                if profiler is not None:
                    profiler.stop()
            if case == "one":
                await bench.cluster.delete_destinations([destination])
                await bench.cluster.wait_folded(timeout_s=60)
            terminate(router)
            router = None
        total = sum((await bench.cluster.end_offsets(EVENTS)).values())
        outcome.figures["ceiling_consume"] = await _ceiling(bench, total, produce=False)
        outcome.figures["ceiling_consume_produce"] = await _ceiling(bench, total, produce=True)
    finally:
        if router is not None:
            terminate(router)
        start_worker(bench)
    _rows(outcome)
    # The scenarios after this one talk to the worker at once (hot reads its metrics first).
    await worker_ready(bench, WORKER_READY_S)
    return outcome


async def worker_ready(bench: Bench, timeout_s: float) -> None:
    """Wait until the restarted worker answers /readyz (it first recovers its tables)."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(stack_ready, bench.stack.ports.worker, "/readyz"):
        if time.monotonic() > deadline:
            raise BenchError(f"the worker was not ready again within {timeout_s:.0f} s")
        await asyncio.sleep(0.5)


def _rows(outcome: Outcome) -> None:
    figures = outcome.figures
    for case, ceiling, label in (
        ("none", "ceiling_consume", "no destination matches"),
        ("one", "ceiling_consume_produce", "one destination matches"),
    ):
        got = figures[case]
        outcome.rows.append(
            Row(
                "router",
                label,
                got["events_per_s"],
                "events/s",
                figures[ceiling]["events_per_s"],
                f"vs bare aiokafka; router {got['cpu_ms_per_event']} ms CPU/event"
                f" (bare {figures[ceiling]['cpu_ms_per_event']});"
                f" {got['deliveries']} deliveries",
            )
        )


def padded(n: int) -> dict[str, Any]:
    """The `data` of event `n` (of the same size as the other scenarios')."""
    return {"n": n, "pad": PAD}


async def preload(
    bench: Bench,
    case: str,
    count: int,
    type_of: Callable[[int], str],
    data_of: Callable[[int], dict[str, Any]] = padded,
) -> None:
    """`count` events in `events`, as the API writes them: event n of `type_of(n)` with
    `data_of(n)` (scenario `filters` shapes its events so)."""
    ends = await bench.cluster.end_offsets(DESTINATIONS)
    stamp = {str(tp.partition): offset for tp, offset in ends.items()}
    created_at = now_iso()
    records = []
    for n in range(count):
        event_id = f"evt_router_{case}_{n}"
        event = {
            "id": event_id,
            "object": "event",
            "type": type_of(n),
            "data": data_of(n),
            "created_at": created_at,
            "tenant": TENANT,
            "deduplicate": True,
            "route_after": stamp,
        }
        records.append((event_id.encode(), orjson.dumps(event)))
    with progress(f"router: preload {case}", count) as bar:
        await bench.cluster.produce(EVENTS, records, bar.update_to)


async def measure(bench: Bench, router: subprocess.Popen[bytes], count: int) -> dict[str, Any]:
    """Follow the router's committed offsets from its first commit until no lag."""
    cluster = bench.cluster
    end = sum((await cluster.end_offsets(EVENTS)).values())
    deliveries_before = sum((await cluster.end_offsets(DELIVERIES)).values())
    start = await cluster.committed(APP_GROUP, EVENTS)
    figures = await follow_commits(
        bench, router, APP_GROUP, EVENTS, start, end, "router: routed", ROUTE_TIMEOUT_S
    )
    deliveries = sum((await cluster.end_offsets(DELIVERIES)).values()) - deliveries_before
    return {"events": count, **figures, "deliveries": deliveries}


async def follow_commits(
    bench: Bench,
    process: subprocess.Popen[bytes],
    group: str,
    topic: str,
    start: int,
    end: int,
    label: str,
    timeout_s: float,
) -> dict[str, Any]:
    """Follow `group`'s committed offsets on `topic` (their sum) from its first commit past
    `start` until `end`, and `process`'s CPU meanwhile: the records and events/s over that
    span, and the CPU per event. A process that exits with 0 (a ceiling that has committed
    everything) keeps its last CPU reading; any other exit ends the bench."""
    first: tuple[float, float, int] | None = None  # monotonic s, CPU s, committed
    cpu_s = 0.0
    deadline = time.monotonic() + timeout_s
    with progress(label, end - start) as bar:
        while True:
            if process.poll() is not None and process.returncode != 0:
                raise BenchError(f"{label}: the process exited ({process.returncode})")
            committed = await bench.cluster.committed(group, topic)
            now, cpu_s = time.monotonic(), cpu_seconds(process.pid) or cpu_s
            bar.update_to(committed - start)
            if first is None and committed > start:
                first = (now, cpu_s, committed)
            if committed >= end:
                break
            if now >= deadline:
                raise BenchError(f"{label}: {committed - start} of {end - start} committed")
            await asyncio.sleep(POLL_S)
    assert first is not None
    measured = committed - first[2]
    elapsed_s, used_s = now - first[0], cpu_s - first[1]
    return {
        "measured_events": measured,
        "elapsed_s": round(elapsed_s, 3),
        "events_per_s": round(measured / elapsed_s, 1) if elapsed_s > 0 else None,
        "cpu_s": round(used_s, 3),
        "cpu_ms_per_event": round(used_s * 1000 / measured, 4) if measured else None,
        "load_average_1m": os.getloadavg()[0],
    }


async def _ceiling(bench: Bench, total: int, produce: bool) -> dict[str, Any]:
    args = ["ceiling", "--bootstrap", bench.stack.kafka_bootstrap, "--count", str(total)]
    if produce:
        args += ["--produce", CEILING_TOPIC]
    label = "router ceiling: consume" + (" + produce" if produce else "")
    result: dict[str, Any] = await bench.load(
        args, label, total, ROUTE_TIMEOUT_S, module="bench.router_alone"
    )
    result["cpu_ms_per_event"] = round(result["cpu_s"] * 1000 / result["events"], 4)
    return result


def _profiler(bench: Bench, router: subprocess.Popen[bytes], case: str) -> Profiler | None:
    """With `--profile`, py-spy on the router too: bench/results/profile/router-<case>.json
    (its whole life: start-up, table recovery and the routing measured)."""
    if not bench.profile:
        return None
    profiler = Profiler({f"router-{case}": router.pid}, bench.stack.data / "profile" / "router")
    profiler.start()
    return profiler


def stop_worker(bench: Bench) -> None:
    """Stop the stack's worker, so that a router started alone is the only one routing."""
    worker = bench.stack.processes.pop("worker")
    terminate(worker)


def start_worker(bench: Bench) -> None:
    """The stack's worker again, not waited for: it first recovers the `event-ids` table
    (every event here had a publisher id), which takes minutes on a busy machine; the next
    scenario's warm-up waits for it, and the stack stops it as usual."""
    log = bench.stack.logs / "worker.log"
    with log.open("ab") as out:
        bench.stack.processes["worker"] = subprocess.Popen(
            [str(HERALD), "worker"],
            cwd=ROOT,
            env=bench.stack.herald_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_router(bench: Bench) -> subprocess.Popen[bytes]:
    """A router by itself (bench/router_alone.py), routing from the group's committed offsets."""
    log = bench.stack.logs / "router.log"
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(PYTHON), "-m", "bench.router_alone", "router"],
            cwd=ROOT,
            env=bench.stack.herald_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
