"""Scenarios 2 and 4: webhook fan-out throughput, and how it holds as the table grows.

A delivery counts when the receiver got the signed POST; deliveries/s runs from the
loader's first publish to the last delivery's arrival (so it is end to end: API, router,
sink, attempt record). Events are published in batches of 100 (the API is not what is
measured here). The ceiling is a bare aiohttp client posting the same body and headers to
the same receiver, with the concurrency the webhook sink may open to one host.
"""

from __future__ import annotations

from typing import Any

from bench.cluster import DestinationSpec
from bench.context import Bench, BenchError, Outcome, Row
from bench.stack import rss_bytes

PUBLISH_BATCH = 100
PUBLISH_CONCURRENCY = 4
# The webhook sink's connection limit to one host: sink_max_in_flight_per_destination * 4.
SINK_CONNECTIONS_PER_HOST = 64
MIB = 1024 * 1024


async def publish_and_wait(
    bench: Bench,
    label: str,
    group: str,
    events: int,
    subscribers: int,
    type_pattern: str,
    *,
    type_count: int = 1,
    timeout_s: float | None = None,
    single: bool = False,
    concurrency: int = PUBLISH_CONCURRENCY,
) -> dict[str, Any]:
    """Publish `events` and wait (at most `timeout_s`) for `events * subscribers` deliveries
    to `group`; deliveries/s counts those that arrived in time. Events go in batches of
    PUBLISH_BATCH, or (`single`) each in its own POST /v2/events; `concurrency` requests
    in flight."""
    await bench.reset(group)
    expected = events * subscribers
    if single:
        requests = events
        shape = [*bench.api_load_args("/v2/events"), "--shape", "event"]
    else:
        requests = -(-events // PUBLISH_BATCH)
        shape = [
            *bench.api_load_args("/v2/events/batch"),
            "--shape",
            "batch",
            "--batch",
            str(PUBLISH_BATCH),
        ]
    per_request = 1 if single else PUBLISH_BATCH
    args = [
        *shape,
        "--count",
        str(requests),
        "--concurrency",
        str(concurrency),
        "--duration-s",
        "120",
        "--type-pattern",
        type_pattern,
        "--type-count",
        str(type_count),
    ]
    cpu_before = bench.stack.cpu()
    waited_before = bench.stack.runqueue_wait()
    load = await bench.load(args, f"{label}: publish", requests * per_request, 180)
    published = int(load["events_ok"])
    expected = published * subscribers
    wait_s = timeout_s if timeout_s is not None else bench.seconds(90, 600)
    tally = await bench.wait_received(group, expected, wait_s, f"{label}: deliver")
    cpu_s = {k: round(v - cpu_before.get(k, 0.0), 2) for k, v in bench.stack.cpu().items()}
    waited = bench.stack.runqueue_wait()
    runqueue_s = {k: round(v - waited_before.get(k, 0.0), 2) for k, v in waited.items()}
    elapsed_s = (tally["last_at"] or load["finished_at"]) - load["started_at"]
    return {
        "events": published,
        "subscribers": subscribers,
        "expected_deliveries": expected,
        "delivered": tally["unique"],
        "duplicates": tally["count"] - tally["unique"],
        "complete": tally["unique"] >= expected,
        "elapsed_s": round(elapsed_s, 3),
        "load_started_at": load["started_at"],
        "publish_events_per_s": load["events_per_s"],
        "deliveries_per_s": round(tally["unique"] / elapsed_s, 1) if elapsed_s > 0 else None,
        # CPU seconds each process used from the first publish to the last delivery (the
        # worker's includes routing, indexing and recording, i.e. all its work per event).
        "cpu_s": cpu_s,
        "worker_cpu_ms_per_delivery": (
            round(cpu_s["worker"] * 1000 / tally["unique"], 3) if tally["unique"] else None
        ),
        # Worker CPU seconds per wall second of the window: well below 1 means the worker
        # mostly waited (on the sink, on Kafka acks), not that it was short of CPU.
        "worker_cpu_per_wall_s": round(cpu_s["worker"] / elapsed_s, 3) if elapsed_s > 0 else None,
        # Seconds each process was runnable but waited for a core (the machine is shared):
        # the rest of the wall time, beyond CPU and this, the worker was idle (awaiting I/O).
        "runqueue_wait_s": runqueue_s,
        "worker_runqueue_wait_per_wall_s": (
            round(runqueue_s["worker"] / elapsed_s, 3) if elapsed_s > 0 else None
        ),
    }


async def webhook_ceiling(
    bench: Bench, count: int, concurrency: int = SINK_CONNECTIONS_PER_HOST
) -> dict[str, Any]:
    """Bare aiohttp client → the same receiver, as many connections as the sink may open
    (or `concurrency`)."""
    await bench.reset("ceiling")
    args = [
        "http",
        "--url",
        f"{bench.stack.receiver_url}/ok/ceiling/0",
        "--shape",
        "delivery",
        "--count",
        str(count),
        "--concurrency",
        str(concurrency),
        "--duration-s",
        str(bench.seconds(3, 20)),
    ]
    label = f"ceiling: bare aiohttp client, {concurrency} in flight"
    result: dict[str, Any] = await bench.load(args, label, count, 120)
    return result


async def run_fanout(bench: Bench) -> Outcome:
    """Deliveries/s with 1, 10 and 100 subscribers per event, and the ceiling."""
    cases = [  # (subscribers per event, events)
        (1, bench.size(1_000, 30_000)),
        (10, bench.size(200, 4_000)),
        (100, bench.size(20, 400)),
    ]
    outcome = Outcome("fanout")
    outcome.settings = {
        "cases": [{"subscribers": s, "events": e} for s, e in cases],
        "publish_batch": PUBLISH_BATCH,
        "ceiling_concurrency": SINK_CONNECTIONS_PER_HOST,
    }
    specs = [
        DestinationSpec("ok", f"fan{s}", i, (f"fan{s}.go",)) for s, _ in cases for i in range(s)
    ]
    await bench.create_destinations(specs, "fan-out destinations")
    await bench.settle()
    ceiling = await webhook_ceiling(bench, bench.size(6_000, 200_000))
    outcome.figures["ceiling_bare_aiohttp_client"] = ceiling
    for subscribers, events in cases:
        await bench.settle()
        label = f"fan-out x{subscribers}"
        result = await publish_and_wait(
            bench, label, f"fan{subscribers}", events, subscribers, f"fan{subscribers}.go"
        )
        outcome.figures[f"subscribers_{subscribers}"] = result
        outcome.rows.append(
            Row(
                "fanout",
                f"{subscribers} subscriber{'s' if subscribers > 1 else ''} per event",
                result["deliveries_per_s"],
                "deliveries/s",
                ceiling["requests_per_s"],
                "; ".join(filter(None, [_cpu_note(result), _completeness(result)])),
            )
        )
    outcome.rows.append(
        Row("fanout", "ceiling: bare aiohttp client", ceiling["requests_per_s"], "req/s")
    )
    return outcome


def _cpu_note(result: dict[str, Any]) -> str:
    per_delivery = result["worker_cpu_ms_per_delivery"]
    return f"worker {per_delivery:.2f} ms CPU/delivery" if per_delivery is not None else ""


def _completeness(result: dict[str, Any]) -> str:
    notes = []
    if not result["complete"]:
        notes.append(f"only {result['delivered']}/{result['expected_deliveries']} in time")
    if result["duplicates"]:
        notes.append(f"{result['duplicates']} duplicates")
    return "; ".join(notes)


async def run_cost(bench: Bench) -> Outcome:
    """The one-match fan-out figure with 10, 10,000 and 100,000 destinations in the table
    (10 and 5,000 with --quick).

    Events cycle through every destination (type `cost.d<k>` is subscribed by destination k
    only), so the sink meets each destination afresh: publisher cache, per-destination
    state and the view all see the table's full size. Worker and API RSS are read after
    the destinations are loaded and again after the run.
    """
    # Quick: folding 10,000 destinations alone takes 10-20 s on the 2-core machine.
    sizes = [10, 5_000] if bench.quick else [10, 10_000, 100_000]
    events = bench.size(1_000, 20_000)
    outcome = Outcome("cost")
    outcome.settings = {"sizes": sizes, "events_per_size": events, "matches_per_event": 1}
    existing = 0
    baseline: float | None = None
    for size in sizes:
        specs = [DestinationSpec("ok", "cost", k, (f"cost.d{k}",)) for k in range(existing, size)]
        await bench.create_destinations(specs, f"{size:,} destinations")
        existing = size
        await bench.settle()
        loaded = {
            "worker": rss_bytes(bench.stack.pid("worker")),
            "api": rss_bytes(bench.stack.pid("api")),
        }
        result = await publish_and_wait(
            bench, f"{size:,} destinations", "cost", events, 1, "cost.d{i}", type_count=size
        )
        result["rss_bytes_loaded"] = loaded
        result["rss_bytes_after"] = {
            "worker": rss_bytes(bench.stack.pid("worker")),
            "api": rss_bytes(bench.stack.pid("api")),
        }
        outcome.figures[f"destinations_{size}"] = result
        if baseline is None:
            baseline = result["deliveries_per_s"]
        worker_mib = result["rss_bytes_after"]["worker"] / MIB
        api_mib = result["rss_bytes_after"]["api"] / MIB
        outcome.rows.append(
            Row(
                "cost",
                f"{size:,} destinations, 1 match/event",
                result["deliveries_per_s"],
                "deliveries/s",
                baseline,
                "; ".join(
                    filter(
                        None,
                        [
                            f"worker RSS {worker_mib:.0f} MiB, API RSS {api_mib:.0f} MiB",
                            _cpu_note(result),
                            _completeness(result),
                        ],
                    )
                ),
            )
        )
    if not outcome.rows:
        raise BenchError("no size was measured")
    return outcome
