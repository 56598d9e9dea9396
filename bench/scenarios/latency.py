"""Scenario 3, latency: publish → delivered p50/p95/p99 at a fixed 1,000 events/s.

The loader publishes on a fixed schedule (open loop: a batch of 10 every 10 ms, whatever
the answers' timing), each event stamped with its send time; the receiver subtracts it
from its arrival time (one machine, one clock). One match per event, spread over 10
destinations. A second, lighter rate (200 events/s) is measured first: where one worker
process cannot keep up with 1,000 events/s on the machine, the 1,000 figure is mostly
time spent queued, and the lighter one shows the pipeline's own latency.

Then the same two rates to ONE destination (issue 13, delivery flow control: every delivery
competes for that destination's in-flight slots): 200 events/s for 30 s (5 s with --quick)
and 1,000 events/s for 60 s (10 s with --quick).
"""

from __future__ import annotations

from typing import Any

from bench.cluster import DestinationSpec
from bench.context import Bench, Outcome, Row

RATES_EVENTS_PER_S = (200, 1_000)
BATCH = 10
DESTINATIONS = 10
GROUP = "latency"
ONE_GROUP = "latency1"
ONE_TYPE = "lat1.go"


async def _hold_rate(
    bench: Bench,
    rate: int,
    duration_s: float,
    group: str = GROUP,
    type_pattern: str = "lat.d{i}",
    type_count: int = DESTINATIONS,
) -> dict[str, Any]:
    """Publish at `rate` for `duration_s`, wait for every delivery; the figures."""
    await bench.settle()
    await bench.reset(group)
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
        type_pattern,
        "--type-count",
        str(type_count),
    ]
    load = await bench.load(args, f"{rate:,} events/s", requests * BATCH, duration_s + 90)
    published = int(load["events_ok"])
    await bench.wait_received(group, published, 120, f"latency at {rate:,}/s: deliver")
    tally = await bench.tally(group, percentiles=True)
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
    """Hold 200 events/s for 30 s, then 1,000 for 60 s (3 and 5 s with --quick), spread
    over 10 destinations; then to one destination, 200 events/s for 30 s and 1,000 for
    60 s (5 and 10 s with --quick)."""
    durations_s = {200: bench.seconds(3, 30), 1_000: bench.seconds(5, 60)}
    one_durations_s = {200: bench.seconds(5, 30), 1_000: bench.seconds(10, 60)}
    outcome = Outcome("latency")
    outcome.settings = {
        "rates_events_per_s": list(RATES_EVENTS_PER_S),
        "duration_s": durations_s,
        "events_per_request": BATCH,
        "destinations": DESTINATIONS,
        "matches_per_event": 1,
        "one_destination_duration_s": one_durations_s,
    }
    specs = [DestinationSpec("ok", GROUP, k, (f"lat.d{k}",)) for k in range(DESTINATIONS)]
    specs.append(DestinationSpec("ok", ONE_GROUP, 0, (ONE_TYPE,)))
    await bench.create_destinations(specs, "latency destinations")
    for rate in RATES_EVENTS_PER_S:
        figures = await _hold_rate(bench, rate, durations_s[rate])
        outcome.figures[f"rate_{rate}"] = figures
        _rows(outcome, f"at {rate:,}/s", figures, durations_s[rate])
    for rate in RATES_EVENTS_PER_S:
        figures = await _hold_rate(bench, rate, one_durations_s[rate], ONE_GROUP, ONE_TYPE, 1)
        outcome.figures[f"one_destination_rate_{rate}"] = figures
        _rows(outcome, f"1 destination at {rate:,}/s", figures, one_durations_s[rate])
    return outcome


def _rows(outcome: Outcome, label: str, figures: dict[str, Any], duration_s: float) -> None:
    note = f"{figures['offered_events_per_s']:,.0f} events/s for {duration_s:.0f} s"
    if figures["delivered"] < figures["published"]:
        note += f"; only {figures['delivered']}/{figures['published']} delivered"
    for name in ("p50", "p95", "p99"):
        outcome.rows.append(
            Row(
                "latency",
                f"{label}: publish → delivered {name}",
                figures["latency_ms"][name],
                "ms",
                note=note,
            )
        )
