"""Issue 14, scenario `scale`: deliveries/s with one delivering process and with two.

For each layout — a router and index process beside K deliver processes (K = 1, then 2),
as `make run` starts them with HERALD_WORKERS=K — the deliver processes are stopped
(SIGSTOP) while the loader publishes the events and the router routes them, then continued
(SIGCONT). From then until the last delivery arrives, only delivery runs (with the router
process indexing the attempts), so the rate is the delivering processes' own, not the
router's or the loader's, which has finished. One destination of the type per `deliveries`
partition (ids chosen by their partition), so each deliver process has its even share.

The machine's cores are shared by everything in that window: the deliver processes, the
receiver (its own process), the router and index process, Kafka and PostgreSQL; the
loader is idle then. CPU per delivery comes from /proc, so it holds on a shared machine.
Afterwards the stack's single all-roles worker is started again for the other scenarios.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from typing import Any

from aiokafka.partitioner import murmur2

from bench.cluster import DestinationSpec
from bench.context import Bench, BenchError, Outcome, Row
from bench.scenarios.fanout import PUBLISH_BATCH, PUBLISH_CONCURRENCY
from bench.stack import BENCH_SETTINGS, TENANT
from pipeline import ids
from pipeline.settings import Settings
from pipeline.topics import DELIVERIES, load_specs, retry_topic

_SPECS = {s.name: s.partitions for s in load_specs(Settings().topics_file)}
PARTITIONS = _SPECS[DELIVERIES]
SUBSCRIBERS = PARTITIONS  # one destination per `deliveries` partition
GROUP = "scale"
ASSIGNED = re.compile(r"delivery runner assigned (\d+) partitions")
EVENT_TYPE = "scale.go"
LAYOUTS = (1, 2)
# Stopped deliver processes send no heartbeats: they must not be dropped from their group
# (a rebalance inside the measured window) while the events are routed. (Only theirs:
# Faust refuses a session timeout above its request timeout, 90 s.)
STOPPED_SESSION_TIMEOUT_S = "60"
# On the shared machine the broker can be starved long enough for the recorder to give up
# (60 s by default; the process then exits for a supervisor, which the bench is not): the
# deliver processes here ride it out instead.
DELIVER_ENV = {
    "HERALD_CONSUMER_SESSION_TIMEOUT_S": STOPPED_SESSION_TIMEOUT_S,
    "HERALD_BROKER_GIVE_UP_S": "600",
}
GOAL_RATIO = 1.6


async def run(bench: Bench) -> Outcome:
    """Deliveries/s and CPU per delivery with one and with two delivering processes."""
    events = bench.size(500, 5_000)
    outcome = Outcome("scale")
    outcome.settings = {"events": events, "subscribers": SUBSCRIBERS, "layouts": LAYOUTS}
    specs = [
        DestinationSpec("ok", GROUP, k, (EVENT_TYPE,), destination_id=destination_id)
        for k, destination_id in enumerate(one_id_per_partition())
    ]
    await bench.create_destinations(specs, "scale destinations")
    try:
        for delivering in LAYOUTS:
            await asyncio.to_thread(_layout, bench, delivering)
            await bench.sync_worker()
            await _wait_group_settled(bench, timeout_s=120)
            await bench.settle()
            result = await _measure(bench, events, delivering)
            outcome.figures[f"deliver_{delivering}"] = result
            outcome.rows.append(_row(delivering, result))
    finally:
        await asyncio.to_thread(_layout, bench, 0)
        await bench.sync_worker()
    rates = [outcome.figures[f"deliver_{k}"]["deliveries_per_s"] for k in LAYOUTS]
    ratio = round(rates[1] / rates[0], 2) if all(rates) else None
    outcome.figures["ratio_2_to_1"] = ratio
    outcome.rows.append(
        Row("scale", "2 delivering processes / 1", ratio, "x", GOAL_RATIO, "goal: at least 1.6")
    )
    return outcome


def one_id_per_partition() -> list[str]:
    """Destination ids whose deliveries land one in each `deliveries` partition (the
    producer's partitioner: murmur2 of `tenant/destination id`)."""
    found: dict[int, str] = {}
    stamp = time.time_ns()
    n = 0
    while len(found) < PARTITIONS:
        candidate = f"{ids.DESTINATION}scale{stamp}_{n}"
        key = ids.scoped(TENANT, candidate).encode()
        found.setdefault((murmur2(key) & 0x7FFFFFFF) % PARTITIONS, candidate)
        n += 1
    return [found[p] for p in range(PARTITIONS)]


def _layout(bench: Bench, delivering: int) -> None:
    """Replace the worker processes by `delivering` deliver processes (0: one all-roles)."""
    bench.stack.stop_workers()
    bench.stack.start_workers(delivering, DELIVER_ENV)


async def _wait_group_settled(bench: Bench, timeout_s: float) -> None:
    """Until the deliver processes hold every partition of the sinks group between them,
    each some: a rebalance must not fall in the measured window, where a stopped member
    would hold it up."""
    tiers = int(BENCH_SETTINGS["HERALD_MAX_RETRIES"])
    total = PARTITIONS + tiers * _SPECS[retry_topic(1)]
    names = [n for n in bench.stack.worker_names() if n.startswith("deliver-")]
    deadline = time.monotonic() + timeout_s
    while True:
        last = []
        for name in names:
            counts = ASSIGNED.findall((bench.stack.logs / f"{name}.log").read_text())
            last.append(int(counts[-1]) if counts else 0)
        if sum(last) == total and all(last):
            return
        if time.monotonic() >= deadline:
            raise BenchError(f"the sinks group did not settle: {last} of {total} partitions")
        await asyncio.sleep(0.5)


async def _measure(bench: Bench, events: int, delivering: int) -> dict[str, Any]:
    stack = bench.stack
    deliverers = [n for n in stack.worker_names() if n.startswith("deliver-")]
    await bench.reset(GROUP)
    routed_before = sum((await bench.cluster.end_offsets(DELIVERIES)).values())
    for name in deliverers:
        os.kill(stack.pid(name), signal.SIGSTOP)
    try:
        published = await _publish(bench, events, f"scale {delivering}: publish")
        expected = published * SUBSCRIBERS
        await _wait_routed(bench, routed_before + expected, timeout_s=bench.seconds(120, 600))
    finally:
        for name in deliverers:
            os.kill(stack.pid(name), signal.SIGCONT)
    continued_at = time.time()
    cpu_before = stack.cpu()
    tally = await bench.wait_received(
        GROUP, expected, bench.seconds(120, 600), f"scale {delivering}: deliver"
    )
    cpu_s = {k: round(v - cpu_before.get(k, 0.0), 2) for k, v in stack.cpu().items()}
    elapsed_s = max((tally["last_at"] or time.time()) - continued_at, 1e-3)
    delivered = tally["unique"]
    deliver_cpu_s = sum(cpu_s[n] for n in deliverers)
    return {
        "delivering_processes": delivering,
        "expected_deliveries": expected,
        "delivered": delivered,
        "duplicates": tally["count"] - delivered,
        "complete": delivered >= expected,
        "elapsed_s": round(elapsed_s, 3),
        "deliveries_per_s": round(delivered / elapsed_s, 1) if delivered else None,
        "cpu_s": cpu_s,
        "deliver_cpu_ms_per_delivery": _per(deliver_cpu_s, delivered),
        # The router and index process indexes the attempts meanwhile.
        "worker_cpu_ms_per_delivery": _per(deliver_cpu_s + cpu_s["worker"], delivered),
        "deliver_cpu_per_wall_s": round(deliver_cpu_s / elapsed_s, 2),
    }


def _per(cpu_s: float, deliveries: int) -> float | None:
    return round(cpu_s * 1000 / deliveries, 3) if deliveries else None


async def _publish(bench: Bench, events: int, label: str) -> int:
    requests = -(-events // PUBLISH_BATCH)
    args = [
        *bench.api_load_args("/v2/events/batch"),
        *("--shape", "batch", "--batch", str(PUBLISH_BATCH), "--count", str(requests)),
        *("--concurrency", str(PUBLISH_CONCURRENCY), "--duration-s", "120"),
        *("--type-pattern", EVENT_TYPE, "--type-count", "1"),
    ]
    load = await bench.load(args, label, requests * PUBLISH_BATCH, 180)
    return int(load["events_ok"])


async def _wait_routed(bench: Bench, records: int, timeout_s: float) -> None:
    """Until `deliveries` holds `records` records in all (every event was routed)."""
    deadline = time.monotonic() + timeout_s
    while sum((await bench.cluster.end_offsets(DELIVERIES)).values()) < records:
        if time.monotonic() >= deadline:
            raise BenchError(f"the router did not route every event within {timeout_s} s")
        await asyncio.sleep(0.2)


def _row(delivering: int, result: dict[str, Any]) -> Row:
    note = (
        f"deliver processes {result['deliver_cpu_ms_per_delivery']} ms CPU/delivery, "
        f"all workers {result['worker_cpu_ms_per_delivery']} ms; "
        f"deliver CPU {result['deliver_cpu_per_wall_s']} s per wall s; "
        f"{result['duplicates']} duplicates"
    )
    if not result["complete"]:
        note += f"; only {result['delivered']}/{result['expected_deliveries']} in time"
    plural = "es" if delivering > 1 else ""
    return Row(
        "scale",
        f"{delivering} delivering process{plural}",
        result["deliveries_per_s"],
        "deliveries/s",
        note=note,
    )
