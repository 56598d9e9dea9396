"""Issue 17, scenario `traces`: what tracing costs per delivery, off and at 1% sampling.

The same load runs with the API and the worker started without tracing and with it on
(OTEL_TRACES_EXPORTER=otlp, OTEL_TRACES_SAMPLER=parentbased_traceidratio at 0.01),
alternating, twice each (once each with --quick), then once with every event traced
(parentbased_always_on) for scale. Spans are exported over OTLP/HTTP to the bench's own
receiver (bench/receiver.py, `POST /v1/traces`, its own process), so the export is real but
offline; the receiver counts the spans and traces that arrived.

The load: single-event `POST /v2/events` (each its own trace: at 1% about one publish in a
hundred is sampled), to one webhook destination. CPU seconds of the worker and the API
from /proc (user + system) from the first publish until the last delivery arrived, per
delivery. Goal: at most 5% more worker + API CPU per delivery at 1% than off.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from bench.cluster import DestinationSpec
from bench.context import Bench, BenchError, Outcome, Row
from bench.scenarios.fanout import publish_and_wait

GROUP = "traces"
EVENT_TYPE = "traces.go"
GOAL_PERCENT = 5.0
SAMPLE_RATIO = "0.01"


def modes(receiver_url: str) -> dict[str, dict[str, str]]:
    """Each mode's environment for the API and the worker."""
    on = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver_url}
    return {
        "off": {"OTEL_TRACES_EXPORTER": "none"},
        "sampled_1_percent": {
            **on,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": SAMPLE_RATIO,
        },
        "sampled_all": {**on, "OTEL_TRACES_SAMPLER": "parentbased_always_on"},
    }


async def _exported(bench: Bench) -> dict[str, int]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{bench.stack.receiver_url}/otlp") as response,
    ):
        counts: dict[str, int] = await response.json()
        return counts


async def _round(bench: Bench, mode: str, env: dict[str, str], events: int) -> dict[str, Any]:
    """Restart the API and worker in `mode`, then publish `events` and wait for them."""
    await asyncio.to_thread(bench.stack.restart_herald, env)
    await bench.sync_worker()
    await bench.settle()
    exported_before = await _exported(bench)
    result = await publish_and_wait(
        bench, f"traces {mode}", GROUP, events, 1, EVENT_TYPE, single=True
    )
    await asyncio.sleep(6)  # the exporter's batch goes out within 5 s: count what it sent
    exported_after = await _exported(bench)
    delivered = result["delivered"]
    cpu_s = result["cpu_s"]
    per_delivery = {
        name: round(cpu_s[name] * 1000 / delivered, 4) if delivered else None
        for name in ("worker", "api")
    }
    return {
        "mode": mode,
        "events": result["events"],
        "delivered": delivered,
        "complete": result["complete"],
        "cpu_s": {name: cpu_s[name] for name in ("worker", "api")},
        "cpu_ms_per_delivery": per_delivery,
        "spans_exported": exported_after["spans"] - exported_before["spans"],
        "traces_exported": exported_after["traces"] - exported_before["traces"],
    }


def _mean_ms(rounds: list[dict[str, Any]], name: str) -> float | None:
    values = [r["cpu_ms_per_delivery"][name] for r in rounds]
    if not values or any(v is None for v in values):
        return None
    return round(sum(values) / len(values), 4)


async def run(bench: Bench) -> Outcome:
    """Off and 1% alternating (2 rounds each, 1 with --quick), then all sampled once."""
    events = bench.size(2_000, 10_000)
    repeats = 1 if bench.quick else 2
    environments = modes(bench.stack.receiver_url)
    outcome = Outcome("traces")
    outcome.settings = {
        "events_per_round": events,
        "rounds_per_mode": repeats,
        "publish": "one event per POST /v2/events",
        "destinations": 1,
        "sampler_at_1_percent": f"parentbased_traceidratio, arg {SAMPLE_RATIO}",
        "exporter": "OTLP/HTTP protobuf to the bench receiver (loopback)",
    }
    await bench.create_destinations([DestinationSpec("ok", GROUP, 0, (EVENT_TYPE,))], "traces")
    rounds: dict[str, list[dict[str, Any]]] = {mode: [] for mode in environments}
    try:
        order = ["off", "sampled_1_percent"] * repeats + ["sampled_all"]
        for mode in order:
            rounds[mode].append(await _round(bench, mode, environments[mode], events))
    finally:  # the other scenarios run without tracing
        await asyncio.to_thread(bench.stack.restart_herald, environments["off"])
        await bench.sync_worker()
    outcome.figures = {"rounds": rounds}
    _rows(outcome, rounds)
    return outcome


def _rows(outcome: Outcome, rounds: dict[str, list[dict[str, Any]]]) -> None:
    totals: dict[str, float] = {}
    for mode, measured in rounds.items():
        worker, api = _mean_ms(measured, "worker"), _mean_ms(measured, "api")
        if worker is None or api is None:
            raise BenchError(f"traces: nothing delivered with tracing {mode}")
        totals[mode] = worker + api
        spans = sum(r["spans_exported"] for r in measured)
        traces = sum(r["traces_exported"] for r in measured)
        outcome.figures[f"{mode}_cpu_ms_per_delivery"] = {
            "worker": worker,
            "api": api,
            "total": round(worker + api, 4),
        }
        outcome.rows.append(
            Row(
                "traces",
                f"tracing {mode.replace('_', ' ')}: worker + API CPU per delivery",
                round(worker + api, 4),
                "ms",
                note=f"worker {worker} ms, API {api} ms; {spans} spans of {traces} traces exported",
            )
        )
    overhead = round((totals["sampled_1_percent"] / totals["off"] - 1) * 100, 2)
    outcome.figures["overhead_percent_at_1_percent"] = overhead
    outcome.rows.append(
        Row(
            "traces",
            "tracing at 1%: more CPU per delivery than off",
            overhead,
            "%",
            GOAL_PERCENT,
            "worker + API, single-event publishes to 1 webhook destination",
        )
    )
