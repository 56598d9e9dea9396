"""Issue 13 (delivery flow control), scenario `dead`: dead destinations beside a healthy one.

One healthy webhook destination subscribed to `["*"]` takes events published at 100
events/s (open loop, one event per POST /v2/events) for 10 minutes (30 s with --quick):
first alone (the clean run), then beside five webhook destinations, also `["*"]`, whose
URL is a 127.0.0.1 port below 32768 that nobody listens on (connection refused at once).

Figures: the healthy destination's delivered rate and publish → received p50/p95/p99 in
both runs; the worker's CPU seconds in both (the dead destinations' share of the dead
run's); and the records the worker produced for the dead destinations' deliveries, from
the end offsets of the retry tiers, the DLQ and `delivery-attempts` before and after each
run: the clean run's records per event (the healthy destination's own) are subtracted
from the dead run's, and what is left is divided by the deliveries routed to the dead
destinations (`deliveries` records, less the clean run's per event). Counted twice: when
the healthy deliveries have arrived ("window"), and again after the retry schedule's span
has passed ("drained", the chains of the window's last deliveries included).

The six destinations are deleted afterwards: `*` would take every later scenario's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

from bench.cluster import DestinationSpec
from bench.context import Bench, BenchError, Outcome, Row, metric_delta
from bench.stack import BENCH_SETTINGS
from pipeline.retry import Schedule
from pipeline.topics import ATTEMPTS, DELIVERIES, DLQ, retry_topic

RATE_EVENTS_PER_S = 100
DEAD_DESTINATIONS = 5
HEALTHY_GROUP = "deadok"
EVENT_TYPE = "dead.go"
HIGHEST_PORT = 32767


def refused_port(start: int, stop: int = HIGHEST_PORT + 1) -> int:
    """A 127.0.0.1 port in [start, stop) that nobody listens on: the first that binds (then
    closed again) and refuses a connection."""
    for port in range(start, stop):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.settimeout(1)
            try:
                client.connect(("127.0.0.1", port))
            except ConnectionRefusedError:
                return port
            except OSError:
                continue
    raise BenchError(f"no free port in {start}..{stop - 1}")


def chain_topics(max_retries: int) -> list[str]:
    """The topics of a delivery's chain after its first attempt: retry tiers, then the DLQ."""
    return [retry_topic(n) for n in range(1, max_retries + 1)] + [DLQ]


def deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Records appended to each topic between two end-offset snapshots."""
    return {topic: after[topic] - before.get(topic, 0) for topic in after}


def records_per_failed_delivery(
    clean: dict[str, int],
    clean_events: int,
    dead: dict[str, int],
    dead_events: int,
    chain: list[str],
) -> dict[str, Any]:
    """The dead destinations' records per delivery routed to them.

    `clean` and `dead` are per-topic record counts of the two runs. Each topic's clean
    count per event (what the healthy destination alone produces) times the dead run's
    events is subtracted from the dead run's; the routed deliveries are the `deliveries`
    records left that way.
    """

    def extra(topic: str) -> float:
        baseline = clean.get(topic, 0) / clean_events if clean_events else 0.0
        return dead.get(topic, 0) - baseline * dead_events

    routed = extra(DELIVERIES)
    chain_records = sum(extra(topic) for topic in chain)
    attempt_records = extra(ATTEMPTS)
    return {
        "routed_to_dead": round(routed),
        "chain_records": round(chain_records),
        "attempt_records": round(attempt_records),
        "dlq_records": round(extra(DLQ)),
        "chain_records_per_failed_delivery": round(chain_records / routed, 3) if routed else None,
        "attempt_records_per_failed_delivery": (
            round(attempt_records / routed, 3) if routed else None
        ),
    }


def extra_cpu_share(cpu_dead_s: float, cpu_clean_s: float) -> float | None:
    """The share of the dead run's worker CPU that the clean run did not need."""
    if cpu_dead_s <= 0:
        return None
    return round((cpu_dead_s - cpu_clean_s) / cpu_dead_s, 3)


async def _snapshot(bench: Bench, topics: list[str]) -> dict[str, int]:
    return {t: sum((await bench.cluster.end_offsets(t)).values()) for t in topics}


def _counters(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """What the worker counted in the window: attempts by outcome, deferrals by reason,
    dead letters, circuit changes."""
    out = {}
    for outcome in ("success", "failed"):
        out[f"attempts_{outcome}"] = metric_delta(
            before, after, "herald_delivery_attempts_total", outcome=outcome
        )
    for reason in ("circuit_open", "queue_full"):
        out[f"deferred_{reason}"] = metric_delta(
            before, after, "herald_deliveries_deferred_total", reason=reason
        )
    out["dead_letters"] = metric_delta(before, after, "herald_dead_letters_total")
    out["circuit_changes"] = metric_delta(before, after, "herald_circuit_changes_total")
    return {k: int(v) for k, v in out.items()}


async def _hold(
    bench: Bench, label: str, duration_s: float, topics: list[str], drain_s: float
) -> dict[str, Any]:
    """Publish at RATE_EVENTS_PER_S for `duration_s`; the healthy destination's figures,
    the worker's CPU and the records appended to `topics`."""
    await bench.settle()
    await bench.reset(HEALTHY_GROUP)
    requests = int(RATE_EVENTS_PER_S * duration_s)
    args = bench.rate_load_args(RATE_EVENTS_PER_S, duration_s, EVENT_TYPE)
    before = await _snapshot(bench, topics)
    metrics_before = await bench.worker_metrics()
    cpu_before = bench.stack.cpu()
    waited_before = bench.stack.runqueue_wait()
    load = await bench.load(args, f"dead: {label}", requests, duration_s + 90)
    published = int(load["events_ok"])
    received = await bench.wait_received(HEALTHY_GROUP, published, 60, f"dead: {label}: deliver")
    cpu_s = {k: round(v - cpu_before.get(k, 0.0), 2) for k, v in bench.stack.cpu().items()}
    waited = bench.stack.runqueue_wait()
    runqueue_s = {k: round(v - waited_before.get(k, 0.0), 2) for k, v in waited.items()}
    window = await _snapshot(bench, topics)
    metrics_after = await bench.worker_metrics()
    tally = await bench.tally(HEALTHY_GROUP, percentiles=True)
    elapsed_s = (received["last_at"] or load["finished_at"]) - load["started_at"]
    drained = window
    if drain_s:
        await asyncio.sleep(drain_s)
        drained = await _snapshot(bench, topics)
    return {
        "load": load,
        "duration_s": duration_s,
        "published": published,
        "healthy_delivered": tally["unique"],
        "healthy_duplicates": tally["count"] - tally["unique"],
        "healthy_elapsed_s": round(elapsed_s, 3),
        "healthy_deliveries_per_s": round(tally["unique"] / elapsed_s, 1) if elapsed_s else None,
        "healthy_latency_ms": tally["latency_ms"],
        "cpu_s": cpu_s,
        "runqueue_wait_s": runqueue_s,
        "worker_counters_window": _counters(metrics_before, metrics_after),
        "records_window": deltas(before, window),
        "records_drained": deltas(before, drained),
        "drain_s": drain_s,
    }


async def run(bench: Bench) -> Outcome:
    """The healthy destination beside five refusing ones, vs alone."""
    duration_s = bench.seconds(30, 600)
    schedule = Schedule(
        float(BENCH_SETTINGS["HERALD_RETRY_BASE_DELAY_S"]),
        int(BENCH_SETTINGS["HERALD_MAX_RETRIES"]),
    )
    chain = chain_topics(schedule.max_retries)
    topics = [DELIVERIES, ATTEMPTS, *chain]
    drain_s = sum(schedule.delay_s(n) for n in range(1, schedule.max_retries + 1)) + 3
    port = refused_port(bench.stack.ports.receiver + 100)
    outcome = Outcome("dead")
    outcome.settings = {
        "rate_events_per_s": RATE_EVENTS_PER_S,
        "duration_s_each_run": duration_s,
        "publish": "one event per POST /v2/events, open loop",
        "healthy_destinations": 1,
        "dead_destinations": DEAD_DESTINATIONS,
        "subscription": ["*"],
        "dead_url": f"http://127.0.0.1:{port}/ (connection refused)",
        "retry_schedule_s": [schedule.delay_s(n) for n in range(1, schedule.max_retries + 1)],
        "max_retries": schedule.max_retries,
        "circuit_breaker": "Herald defaults (HERALD_CIRCUIT_* not set by the bench)",
        "drain_s": drain_s,
    }
    healthy = [DestinationSpec("ok", HEALTHY_GROUP, 0, ("*",))]
    dead = [
        DestinationSpec("ok", "dead", k, ("*",), url=f"http://127.0.0.1:{port}/dead/{k}")
        for k in range(DEAD_DESTINATIONS)
    ]
    created: list[str] = []
    try:
        created += await bench.create_destinations(healthy, "dead: healthy destination")
        # Nothing of the clean run's is retried (only the healthy destination): no drain.
        clean = await _hold(bench, "clean run", duration_s, topics, 0.0)
        created += await bench.create_destinations(dead, "dead: dead destinations")
        # The warm-up event's chains to the dead destinations end before the run starts.
        await asyncio.sleep(drain_s)
        started = time.monotonic()
        dirty = await _hold(bench, "with 5 dead", duration_s, topics, drain_s)
        dirty["run_s"] = round(time.monotonic() - started, 1)
    finally:
        if created:
            with contextlib.suppress(Exception):
                await bench.delete_destinations(created)
    outcome.figures = {"clean": clean, "dead": dirty}
    for when in ("window", "drained"):
        outcome.figures[f"dead_records_{when}"] = records_per_failed_delivery(
            clean[f"records_{when}"],
            clean["published"],
            dirty[f"records_{when}"],
            dirty["published"],
            chain,
        )
    cpu_clean, cpu_dead = clean["cpu_s"]["worker"], dirty["cpu_s"]["worker"]
    outcome.figures["worker_cpu_extra_share"] = extra_cpu_share(cpu_dead, cpu_clean)
    _rows(outcome, clean, dirty, duration_s)
    await bench.settle()
    return outcome


def _rows(
    outcome: Outcome, clean: dict[str, Any], dirty: dict[str, Any], duration_s: float
) -> None:
    load_note = f"{RATE_EVENTS_PER_S} events/s for {duration_s:.0f} s"
    for name, run in (("clean", clean), ("5 dead", dirty)):
        note = load_note
        if run["healthy_delivered"] < run["published"]:
            note += f"; only {run['healthy_delivered']}/{run['published']} delivered"
        outcome.rows.append(
            Row(
                "dead",
                f"healthy delivered rate, {name}",
                run["healthy_deliveries_per_s"],
                "deliveries/s",
                clean["healthy_deliveries_per_s"] if run is dirty else None,
                note,
            )
        )
    for name in ("p50", "p95", "p99"):
        outcome.rows.append(
            Row(
                "dead",
                f"healthy publish → received {name}, 5 dead",
                dirty["healthy_latency_ms"][name],
                "ms",
                clean["healthy_latency_ms"][name],
                "ceiling/baseline column: the clean run's",
            )
        )
    for when in ("window", "drained"):
        records = outcome.figures[f"dead_records_{when}"]
        note = f"{records['routed_to_dead']} deliveries routed to the dead destinations"
        outcome.rows.append(
            Row(
                "dead",
                f"retry-tier + DLQ records per failed delivery ({when})",
                records["chain_records_per_failed_delivery"],
                "records",
                note=note,
            )
        )
        outcome.rows.append(
            Row(
                "dead",
                f"attempt records per failed delivery ({when})",
                records["attempt_records_per_failed_delivery"],
                "records",
                note=note,
            )
        )
    cpu_clean, cpu_dead = clean["cpu_s"]["worker"], dirty["cpu_s"]["worker"]
    share = outcome.figures["worker_cpu_extra_share"]
    outcome.rows.append(
        Row(
            "dead",
            "worker CPU, 5 dead",
            cpu_dead,
            "s",
            cpu_clean,
            f"clean {cpu_clean:.1f} s; dead destinations' share {share:.0%}"
            if share is not None
            else "",
        )
    )
