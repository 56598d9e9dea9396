"""Issue 14, scenario `light`: what an idle or lightly loaded Herald costs.

Idle: once everything queued is finished and a few seconds have passed, the CPU seconds
the worker and the API spend over 20 s (10 s with --quick) with nothing published, as a
percentage of one core. Goal: at most 1% each.

Light load: one webhook destination, 100 single-event `POST /v2/events` a second (open
loop) for 30 s (15 s with --quick); the CPU seconds of the API and of the worker from
the first publish until every delivery arrived, per event, and publish → received
p50/p99. Goal: API + worker at most 1 ms per event. CPU comes from /proc (user + system),
so it does not depend on how busy the machine's other processes keep the cores.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.cluster import DestinationSpec
from bench.context import Bench, Outcome, Row

RATE_EVENTS_PER_S = 100
GROUP = "light"
EVENT_TYPE = "light.go"
SETTLE_S = 5.0
IDLE_CEILING_PERCENT = 1.0
LIGHT_CEILING_MS_PER_EVENT = 1.0


async def _idle(bench: Bench, duration_s: float) -> dict[str, Any]:
    """The worker's and the API's CPU over `duration_s` with nothing happening."""
    await bench.settle()
    await asyncio.sleep(SETTLE_S)  # the commits and acknowledgements after the last work
    before = bench.stack.cpu()
    await asyncio.sleep(duration_s)
    after = bench.stack.cpu()
    percent = {
        name: round((after[name] - before[name]) * 100 / duration_s, 2)
        for name in ("worker", "api")
    }
    return {"duration_s": duration_s, "cpu_percent_of_a_core": percent}


async def _light(bench: Bench, duration_s: float) -> dict[str, Any]:
    """Publish RATE_EVENTS_PER_S single events for `duration_s`; CPU per event, latency."""
    await bench.settle()
    await bench.reset(GROUP)
    requests = int(RATE_EVENTS_PER_S * duration_s)
    args = bench.rate_load_args(RATE_EVENTS_PER_S, duration_s, EVENT_TYPE)
    before = bench.stack.cpu()
    load = await bench.load(args, "light: 100 events/s", requests, duration_s + 90)
    published = int(load["events_ok"])
    await bench.wait_received(GROUP, published, 60, "light: deliver")
    after = bench.stack.cpu()
    tally = await bench.tally(GROUP, percentiles=True)
    cpu_s = {name: round(after[name] - before[name], 3) for name in ("worker", "api")}
    per_event_ms = {
        name: round(seconds * 1000 / published, 3) if published else None
        for name, seconds in cpu_s.items()
    }
    return {
        "load": load,
        "duration_s": duration_s,
        "published": published,
        "delivered": tally["unique"],
        "duplicates": tally["count"] - tally["unique"],
        "latency_ms": tally["latency_ms"],
        "cpu_s": cpu_s,
        "cpu_ms_per_event": per_event_ms,
    }


async def run(bench: Bench) -> Outcome:
    """Idle for 20 s (10 s with --quick), then 100 events/s for 30 s (15 s)."""
    idle_s = bench.seconds(10, 20)
    light_s = bench.seconds(15, 30)
    outcome = Outcome("light")
    outcome.settings = {
        "idle_s": idle_s,
        "rate_events_per_s": RATE_EVENTS_PER_S,
        "duration_s": light_s,
        "publish": "one event per POST /v2/events, open loop",
        "destinations": 1,
    }
    await bench.create_destinations([DestinationSpec("ok", GROUP, 0, (EVENT_TYPE,))], "light")
    idle = await _idle(bench, idle_s)
    light = await _light(bench, light_s)
    outcome.figures = {"idle": idle, "light": light}
    _rows(outcome, idle, light)
    return outcome


def _rows(outcome: Outcome, idle: dict[str, Any], light: dict[str, Any]) -> None:
    for name in ("worker", "api"):
        outcome.rows.append(
            Row(
                "light",
                f"idle: {name} CPU",
                idle["cpu_percent_of_a_core"][name],
                "% of a core",
                IDLE_CEILING_PERCENT,
                f"over {idle['duration_s']:.0f} s, nothing published",
            )
        )
    note = f"{RATE_EVENTS_PER_S} events/s to 1 destination for {light['duration_s']:.0f} s"
    if light["delivered"] < light["published"]:
        note += f"; only {light['delivered']}/{light['published']} delivered"
    per_event = light["cpu_ms_per_event"]
    total = (
        round(per_event["worker"] + per_event["api"], 3)
        if per_event["worker"] is not None and per_event["api"] is not None
        else None
    )
    outcome.rows.append(
        Row(
            "light",
            "100 events/s: API + worker CPU per event",
            total,
            "ms",
            LIGHT_CEILING_MS_PER_EVENT,
            f"{note}; worker {per_event['worker']} ms, API {per_event['api']} ms",
        )
    )
    for name in ("p50", "p99"):
        outcome.rows.append(
            Row(
                "light",
                f"100 events/s: publish → delivered {name}",
                light["latency_ms"][name],
                "ms",
                note=note,
            )
        )
