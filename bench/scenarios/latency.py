"""Scenario 3, latency: publish → delivered p50/p95/p99 at a fixed 1,000 events/s.

The loader publishes on a fixed schedule (open loop: a batch of 10 every 10 ms, whatever
the answers' timing), each event stamped with its send time; the receiver subtracts it
from its arrival time (one machine, one clock). One match per event, spread over 10
destinations. A second, lighter rate (200 events/s) is measured first: where one worker
process cannot keep up with 1,000 events/s on the machine, the 1,000 figure is mostly
time spent queued, and the lighter one shows the pipeline's own latency.
"""

from __future__ import annotations

from typing import Any

from bench.cluster import DestinationSpec
from bench.context import Bench, Outcome, Row

RATES_EVENTS_PER_S = (200, 1_000)
BATCH = 10
DESTINATIONS = 10
GROUP = "latency"


async def _hold_rate(bench: Bench, rate: int, duration_s: float) -> dict[str, Any]:
    """Publish at `rate` for `duration_s`, wait for every delivery; the figures."""
    await bench.settle()
    await bench.reset(GROUP)
    requests = int(rate * duration_s / BATCH)
    args = [
        *bench.api_load_args("/v2/events/batch"),
        "--shape",
        "batch",
        "--batch",
        str(BATCH),
        "--rate",
        str(rate),
        "--count",
        str(requests),
        "--concurrency",
        "64",
        "--duration-s",
        str(duration_s),
        "--type-pattern",
        "lat.d{i}",
        "--type-count",
        str(DESTINATIONS),
    ]
    load = await bench.load(args, f"{rate:,} events/s", requests * BATCH, duration_s + 90)
    published = int(load["events_ok"])
    await bench.wait_received(GROUP, published, 120, f"latency at {rate:,}/s: deliver")
    tally = await bench.tally(GROUP, percentiles=True)
    return {
        "load": load,
        "duration_s": duration_s,
        "offered_events_per_s": round(published / duration_s, 1),
        "published": published,
        "delivered": tally["unique"],
        "duplicates": tally["count"] - tally["unique"],
        "latency_ms": tally["latency_ms"],
    }


async def run(bench: Bench) -> Outcome:
    """Hold 200 events/s for 30 s, then 1,000 for 60 s (3 and 5 s with --quick)."""
    durations_s = {200: bench.seconds(3, 30), 1_000: bench.seconds(5, 60)}
    outcome = Outcome("latency")
    outcome.settings = {
        "rates_events_per_s": list(RATES_EVENTS_PER_S),
        "duration_s": durations_s,
        "events_per_request": BATCH,
        "destinations": DESTINATIONS,
        "matches_per_event": 1,
    }
    specs = [DestinationSpec("ok", GROUP, k, (f"lat.d{k}",)) for k in range(DESTINATIONS)]
    await bench.create_destinations(specs, "latency destinations")
    for rate in RATES_EVENTS_PER_S:
        figures = await _hold_rate(bench, rate, durations_s[rate])
        outcome.figures[f"rate_{rate}"] = figures
        note = f"{figures['offered_events_per_s']:,.0f} events/s for {durations_s[rate]:.0f} s"
        if figures["delivered"] < figures["published"]:
            note += f"; only {figures['delivered']}/{figures['published']} delivered"
        for name in ("p50", "p95", "p99"):
            outcome.rows.append(
                Row(
                    "latency",
                    f"at {rate:,}/s: publish → delivered {name}",
                    figures["latency_ms"][name],
                    "ms",
                    note=note,
                )
            )
    return outcome
