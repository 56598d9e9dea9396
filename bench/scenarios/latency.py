"""Scenario 3, latency: publish → delivered p50/p95/p99 at a fixed 1,000 events/s.

The loader publishes on a fixed schedule (open loop: a batch of 10 every 10 ms, whatever
the answers' timing), each event stamped with its send time; the receiver subtracts it
from its arrival time (one machine, one clock). One match per event, spread over 10
destinations.
"""

from __future__ import annotations

from bench.cluster import DestinationSpec
from bench.context import Bench, Outcome, Row

RATE_EVENTS_PER_S = 1_000
BATCH = 10
DESTINATIONS = 10
GROUP = "latency"


async def run(bench: Bench) -> Outcome:
    """Hold 1,000 events/s for 60 s (10 s with --quick) and read the latency percentiles."""
    duration_s = bench.seconds(10, 60)
    outcome = Outcome("latency")
    outcome.settings = {
        "rate_events_per_s": RATE_EVENTS_PER_S,
        "duration_s": duration_s,
        "events_per_request": BATCH,
        "destinations": DESTINATIONS,
        "matches_per_event": 1,
    }
    specs = [DestinationSpec("ok", GROUP, k, (f"lat.d{k}",)) for k in range(DESTINATIONS)]
    await bench.create_destinations(specs, "latency destinations")
    await bench.settle()
    await bench.reset(GROUP)
    requests = int(RATE_EVENTS_PER_S * duration_s / BATCH)
    args = [
        *bench.api_load_args("/v2/events/batch"),
        "--shape",
        "batch",
        "--batch",
        str(BATCH),
        "--rate",
        str(RATE_EVENTS_PER_S),
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
    load = await bench.load(args, "1,000 events/s", requests * BATCH, duration_s + 90)
    published = int(load["events_ok"])
    await bench.wait_received(GROUP, published, 120, "latency: deliver")
    tally = await bench.tally(GROUP, percentiles=True)
    latency = tally["latency_ms"]
    outcome.figures = {
        "load": load,
        "offered_events_per_s": round(published / duration_s, 1),
        "delivered": tally["unique"],
        "duplicates": tally["count"] - tally["unique"],
        "latency_ms": latency,
    }
    achieved = f"{published / duration_s:,.0f} events/s offered for {duration_s:.0f} s"
    if tally["unique"] < published:
        achieved += f"; only {tally['unique']}/{published} delivered"
    for name in ("p50", "p95", "p99"):
        outcome.rows.append(
            Row("latency", f"publish → delivered {name}", latency[name], "ms", note=achieved)
        )
    return outcome
