"""Issue 13 (delivery flow control), scenario `hot`: one hot destination.

One webhook destination whose receiver answers 200 at once takes every event:

(a) each event its own POST /v2/events, 50 requests in flight;
(b) the same count in batches of 100 (what fanout does);
(c) ten webhook destinations subscribed to the same type, single-event publishes, 50 in flight.

Deliveries/s runs from the loader's first publish to the last delivery's arrival (as in
fanout). Beside it, the ceiling: a bare aiohttp client posting the same body and headers to
the same receiver with the connections the webhook sink may open to one host (64), and,
for reference, with the per-destination bound of deliveries in flight (16). The worker's
CPU seconds per wall second of the window tell whether it was busy or mostly waiting.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.cluster import DestinationSpec
from bench.context import Bench, Outcome, Row, metric_delta
from bench.scenarios.dead import deltas
from bench.scenarios.fanout import (
    PUBLISH_BATCH,
    PUBLISH_CONCURRENCY,
    SINK_CONNECTIONS_PER_HOST,
    publish_and_wait,
    webhook_ceiling,
)
from bench.stack import BENCH_SETTINGS
from pipeline.topics import DELIVERIES, retry_topic

SINGLE_CONCURRENCY = 50
TEN = 10
# Herald's default sink_max_in_flight_per_destination (the `_per_destination` semaphore).
PER_DESTINATION_IN_FLIGHT = 16


def slot_hold_ms(deliveries_per_s: float | None, slots: int) -> float | None:
    """How long each delivery held its destination slot on average, by Little's law, if all
    `slots` stayed taken (a backlog waited for them the whole time)."""
    if not deliveries_per_s:
        return None
    return round(slots * 1000 / deliveries_per_s, 2)


async def _routed_at(bench: Bench, expected: int) -> float | None:
    """Wall-clock time at which `expected` more records were in `deliveries` than when
    called (the router had routed the whole case), polled every 0.1 s; runs until then."""
    start = sum((await bench.cluster.end_offsets(DELIVERIES)).values())
    while True:
        await asyncio.sleep(0.1)
        now = sum((await bench.cluster.end_offsets(DELIVERIES)).values())
        if now - start >= expected:
            return time.time()


def routing_figures(result: dict[str, Any], routed_at: float | None) -> dict[str, Any]:
    """When the router had written every delivery, from the first publish, and its rate:
    if it finished long before the last delivery arrived, the runner is the slow part."""
    started_at = result.get("load_started_at")
    if routed_at is None or started_at is None:
        return {"routed_after_s": None, "routed_per_s": None}
    routed_after_s = max(routed_at - started_at, 1e-3)
    return {
        "routed_after_s": round(routed_after_s, 3),
        "routed_per_s": round(result["expected_deliveries"] / routed_after_s, 1),
    }


def case_note(result: dict[str, Any]) -> str:
    """The note of a case's row: CPU per delivery, busy share, duplicates, completeness."""
    parts = []
    if result.get("worker_cpu_ms_per_delivery") is not None:
        parts.append(f"worker {result['worker_cpu_ms_per_delivery']:.2f} ms CPU/delivery")
    if result.get("worker_cpu_per_wall_s") is not None:
        parts.append(f"worker CPU {result['worker_cpu_per_wall_s']:.2f} s per wall s")
    if result.get("worker_runqueue_wait_per_wall_s") is not None:
        parts.append(f"waited for a core {result['worker_runqueue_wait_per_wall_s']:.2f} s")
    parts.append(f"{result['duplicates']} duplicates")
    if result.get("routed_per_s") is not None:
        parts.append(f"router wrote all deliveries at {result['routed_per_s']:,.0f}/s")
        if not runner_was_behind(result):
            parts.append("the runner kept pace with the router")
    if result.get("sink_mean_ms") is not None:
        parts.append(f"sink {result['sink_mean_ms']:.1f} ms/request")
    if result.get("slot_hold_ms_if_saturated") is not None:
        parts.append(f"slot held ~{result['slot_hold_ms_if_saturated']:.0f} ms if all full")
    if result.get("deferred_queue_full"):
        parts.append(f"{result['deferred_queue_full']} put off (queue full)")
    if not result["complete"]:
        parts.append(f"only {result['delivered']}/{result['expected_deliveries']} in time")
    return "; ".join(parts)


async def run(bench: Bench) -> Outcome:
    """Deliveries/s to one hot destination (single and batched publishes) and to ten
    destinations of one type, beside the bare-client ceiling."""
    events = bench.size(1_500, 5_000)
    ten_events = bench.size(600, 2_000)
    outcome = Outcome("hot")
    outcome.settings = {
        "events_one_destination": events,
        "events_ten_destinations": ten_events,
        "single_publish_concurrency": SINGLE_CONCURRENCY,
        "publish_batch": PUBLISH_BATCH,
        "ceiling_concurrency": SINK_CONNECTIONS_PER_HOST,
        "ceiling_concurrency_per_destination_bound": PER_DESTINATION_IN_FLIGHT,
    }
    specs = [DestinationSpec("ok", "hot1", 0, ("hot.go",))]
    specs += [DestinationSpec("ok", "hot10", k, ("hot10.go",)) for k in range(TEN)]
    await bench.create_destinations(specs, "hot destinations")
    await bench.settle()
    count = bench.size(6_000, 60_000)
    ceiling = await webhook_ceiling(bench, count)
    ceiling16 = await webhook_ceiling(bench, count, PER_DESTINATION_IN_FLIGHT)
    outcome.figures["ceiling_bare_aiohttp_client"] = ceiling
    outcome.figures["ceiling_bare_aiohttp_client_16"] = ceiling16
    cases = [  # (key, label, group, type, events, subscribers, single)
        ("single", "1 destination, single-event publishes", "hot1", "hot.go", events, 1, True),
        ("batch", "1 destination, batches of 100", "hot1", "hot.go", events, 1, False),
        ("ten", "10 destinations same type, single", "hot10", "hot10.go", ten_events, TEN, True),
    ]
    tiers = [retry_topic(n) for n in range(1, int(BENCH_SETTINGS["HERALD_MAX_RETRIES"]) + 1)]
    for key, label, group, event_type, count_events, subscribers, single in cases:
        await bench.settle()
        metrics_before = await bench.worker_metrics()
        tiers_before = {t: sum((await bench.cluster.end_offsets(t)).values()) for t in tiers}
        routed = asyncio.create_task(_routed_at(bench, count_events * subscribers))
        try:
            result = await publish_and_wait(
                bench,
                f"hot: {label}",
                group,
                count_events,
                subscribers,
                event_type,
                single=single,
                concurrency=SINGLE_CONCURRENCY if single else PUBLISH_CONCURRENCY,
            )
        finally:
            routed.cancel()  # done already, unless the router never finished the case
        # Not awaited: a Ctrl-C cancelling this scenario must not be swallowed here.
        routed_at = None
        if routed.done() and not routed.cancelled() and routed.exception() is None:
            routed_at = routed.result()
        result.update(routing_figures(result, routed_at))
        metrics_after = await bench.worker_metrics()
        tiers_after = {t: sum((await bench.cluster.end_offsets(t)).values()) for t in tiers}
        result.update(_worker_figures(metrics_before, metrics_after, result, subscribers))
        result["retry_tier_records"] = deltas(tiers_before, tiers_after)
        outcome.figures[key] = result
        outcome.rows.append(
            Row(
                "hot",
                label,
                result["deliveries_per_s"],
                "deliveries/s",
                ceiling["requests_per_s"],
                case_note(result),
            )
        )
        outcome.rows.append(
            Row(
                "hot",
                f"{label}: worker CPU",
                result["worker_cpu_ms_per_delivery"],
                "ms/delivery",
            )
        )
    outcome.rows.append(
        Row(
            "hot",
            f"ceiling: bare aiohttp client, {SINK_CONNECTIONS_PER_HOST} in flight",
            ceiling["requests_per_s"],
            "req/s",
        )
    )
    outcome.rows.append(
        Row(
            "hot",
            f"ceiling: bare aiohttp client, {PER_DESTINATION_IN_FLIGHT} in flight",
            ceiling16["requests_per_s"],
            "req/s",
            note="the per-destination bound of deliveries in flight",
        )
    )
    await bench.settle()
    return outcome


def _worker_figures(
    before: dict[str, float], after: dict[str, float], result: dict[str, Any], destinations: int
) -> dict[str, Any]:
    """From the worker's /metrics: the sink's own time per delivery (the HTTP request), the
    deliveries put off, and the slot hold time Little's law gives (if the slots stayed full)."""
    name = "herald_delivery_latency_seconds"
    count = metric_delta(before, after, f"{name}_count", type="webhook", outcome="success")
    total_s = metric_delta(before, after, f"{name}_sum", type="webhook", outcome="success")
    deferred = "herald_deliveries_deferred_total"
    return {
        "sink_attempts_succeeded": int(count),
        "sink_mean_ms": round(total_s * 1000 / count, 2) if count else None,
        "deferred_queue_full": int(metric_delta(before, after, deferred, reason="queue_full")),
        "deferred_circuit_open": int(metric_delta(before, after, deferred, reason="circuit_open")),
        # Meaningful only if the runner, not the router, set the pace (else the slots were
        # mostly free, waiting for deliveries to be routed): None then.
        "slot_hold_ms_if_saturated": (
            slot_hold_ms(result["deliveries_per_s"], PER_DESTINATION_IN_FLIGHT * destinations)
            if runner_was_behind(result)
            else None
        ),
    }


def runner_was_behind(result: dict[str, Any]) -> bool:
    """Whether the router had written every delivery well (20%) before the last one arrived,
    i.e. deliveries queued for the runner rather than the runner waiting for the router."""
    routed_after_s = result.get("routed_after_s")
    return routed_after_s is not None and routed_after_s < 0.8 * result["elapsed_s"]
