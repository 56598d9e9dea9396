"""Scenarios 5 and 6: throughput while some destinations fail, and how late retries fire.

Failure load: the 10-subscriber fan-out twice, first with ten healthy destinations, then
with eight healthy, one answering 500 and one sleeping past the delivery timeout (1 s in
the bench); the figure is the healthy destinations' deliveries/s, beside the clean run's.
The failing pair is deleted afterwards, so their retries end and the next scenario starts
on an idle worker.

Retry precision: one destination that always answers 500, under the scaled schedule
(0.5 s, 1 s, 2 s). The receiver never sees the attempt number, only each webhook-id's
arrivals, so the lateness of retry n is (arrival n - arrival n-1) - delay of tier n. That
gap also holds the failed response's way back and the attempt's recording, so it is an
upper bound on how late the tier's consumer released the record. A background load keeps
the worker busy meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.cluster import DestinationSpec
from bench.context import Bench, Outcome, Row
from bench.receiver import percentile_summary
from bench.scenarios.fanout import publish_and_wait
from bench.stack import BENCH_SETTINGS
from pipeline.retry import Schedule

SUBSCRIBERS = 10


async def run_failure(bench: Bench) -> Outcome:
    """Healthy throughput with 10% of destinations failing and 10% timing out, vs clean."""
    events = bench.size(300, 3_000)
    bound_s = bench.seconds(15, 120)
    outcome = Outcome("failure")
    outcome.settings = {
        "events": events,
        "subscribers_per_event": SUBSCRIBERS,
        "faulty": {"healthy": 8, "answer_500": 1, "time_out": 1},
        "wait_bound_s": bound_s,
        **{k: v for k, v in BENCH_SETTINGS.items()},
    }
    clean = [DestinationSpec("ok", "clean", k, ("clean.go",)) for k in range(SUBSCRIBERS)]
    healthy = [DestinationSpec("ok", "healthy", k, ("faulty.go",)) for k in range(8)]
    failing = [
        DestinationSpec("fail", "failing", 0, ("faulty.go",)),
        DestinationSpec("slow", "slow", 0, ("faulty.go",)),
    ]
    await bench.create_destinations(clean + healthy, "failure: healthy destinations")
    failing_ids = await bench.create_destinations(failing, "failure: failing destinations")
    await bench.settle()
    clean_run = await publish_and_wait(
        bench, "clean x10", "clean", events, SUBSCRIBERS, "clean.go", timeout_s=bound_s
    )
    await bench.settle()
    await bench.reset("failing", "slow")
    faulty_run = await publish_and_wait(
        bench, "8 healthy + 2 faulty", "healthy", events, 8, "faulty.go", timeout_s=bound_s
    )
    faulty_run["failing_attempts_seen"] = (await bench.tally("failing"))["count"]
    faulty_run["slow_attempts_seen"] = (await bench.tally("slow"))["count"]
    await bench.delete_destinations(failing_ids)
    faulty_run["lag_after_cleanup"] = await bench.settle()
    outcome.figures = {"clean": clean_run, "faulty": faulty_run}
    outcome.rows.append(
        Row("failure", "clean: 10 healthy per event", clean_run["deliveries_per_s"], "deliveries/s")
    )
    note = "healthy deliveries/s vs the clean run"
    if not faulty_run["complete"]:
        note += (
            f"; only {faulty_run['delivered']}/{faulty_run['expected_deliveries']}"
            f" healthy deliveries within {bound_s:.0f} s"
        )
    outcome.rows.append(
        Row(
            "failure",
            "8 healthy + 1x500 + 1xtimeout",
            faulty_run["deliveries_per_s"],
            "deliveries/s",
            clean_run["deliveries_per_s"],
            note,
        )
    )
    return outcome


async def _background(bench: Bench, duration_s: float) -> Any:
    rate = 200
    args = [
        *bench.api_load_args("/v2/events/batch"),
        "--shape",
        "batch",
        "--batch",
        "10",
        "--rate",
        str(rate),
        "--count",
        str(int(rate * duration_s / 10)),
        "--concurrency",
        "16",
        "--duration-s",
        str(duration_s),
        "--type-pattern",
        "retrybg.go",
    ]
    return await bench.load(args, "retry: background load", int(rate * duration_s), duration_s + 60)


def lateness(arrivals: dict[str, list[float]], schedule: Schedule) -> dict[str, Any]:
    """Per tier and overall: how much later than its delay each retry arrived (ms)."""
    by_tier: dict[int, list[float]] = {n: [] for n in range(1, schedule.max_retries + 1)}
    for times in arrivals.values():
        ordered = sorted(times)
        for tier in range(1, min(len(ordered), schedule.max_retries + 1)):
            gap_s = ordered[tier] - ordered[tier - 1]
            by_tier[tier].append((gap_s - schedule.delay_s(tier)) * 1000)
    everything = [v for values in by_tier.values() for v in values]
    return {
        "all": percentile_summary(everything),
        **{f"tier_{n}": percentile_summary(values) for n, values in by_tier.items()},
    }


async def run_retry(bench: Bench) -> Outcome:
    """How late each retry fires relative to its due time, p50/p99."""
    schedule = Schedule(
        float(BENCH_SETTINGS["HERALD_RETRY_BASE_DELAY_S"]),
        int(BENCH_SETTINGS["HERALD_MAX_RETRIES"]),
    )
    events = bench.size(100, 500)
    window_s = bench.seconds(4, 20)
    outcome = Outcome("retry")
    outcome.settings = {
        "events": events,
        "publish_window_s": window_s,
        "delays_s": [schedule.delay_s(n) for n in range(1, schedule.max_retries + 1)],
        "background_events_per_s": 200,
    }
    # Two deliveries per failing destination: 8 failed attempts in a row, below the circuit
    # breaker's threshold (10), which would otherwise hold the retries being measured.
    failing = max(1, events // 2)
    outcome.settings["failing_destinations"] = failing
    specs = [DestinationSpec("fail", "retry", k, (f"retry.go.{k}",)) for k in range(failing)]
    specs.append(DestinationSpec("ok", "retrybg", 0, ("retrybg.go",)))
    await bench.create_destinations(specs, "retry destinations")
    await bench.settle()
    await bench.reset("retry", "retrybg")
    background = asyncio.create_task(_background(bench, window_s + 4))
    try:
        interval_s = window_s / events
        started = time.monotonic()
        for n in range(events):
            await asyncio.sleep(max(0.0, started + n * interval_s - time.monotonic()))
            event = {"type": f"retry.go.{n % failing}", "data": {"sent_at": time.time(), "n": n}}
            await bench.publish([event])
        attempts = events * (schedule.max_retries + 1)
        total_delay_s = sum(schedule.delay_s(n) for n in range(1, schedule.max_retries + 1))
        tally = await bench.wait_received("retry", events, 30, "retry: first attempts")
        deadline = time.monotonic() + total_delay_s + 30
        while tally["count"] < attempts and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            tally = await bench.tally("retry")
    except BaseException:
        background.cancel()
        raise
    background_result = await background
    detail = await bench.tally("retry", arrivals=True)
    late = lateness(detail.pop("arrivals", {}), schedule)
    outcome.figures = {
        "attempts_expected": attempts,
        "attempts_seen": detail["count"],
        "webhook_ids": detail["unique"],
        "lateness_ms": late,
        "background": background_result,
    }
    note = f"{detail['count']}/{attempts} attempts seen; 200 events/s background"
    for name in ("p50", "p99"):
        outcome.rows.append(
            Row("retry", f"retry lateness {name}", late["all"][name], "ms", note=note)
        )
    outcome.rows.append(Row("retry", "retry lateness max", late["all"]["max"], "ms", note=note))
    await bench.settle()
    return outcome
