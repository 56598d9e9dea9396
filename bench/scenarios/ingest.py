"""Scenario 1, ingest: events/s the API accepts (acks=all), beside the machine's ceilings.

Ceilings, measured with the same loader on the same machine while Herald idles: a bare
aiohttp handler (requests/s, the receiver's `/bare` route: a separate process answering 202
with a small JSON body) for single-event publishes at the same concurrency, and a bare
aiokafka producer in one process (acks=all, idempotent) sending the records Herald writes,
1,000 at a time split into one batch per partition with 4 batches in flight, for batches.
The goals (issue 14): single publishes at 0.6 of the bare handler, batches of 1,000 at
50,000 events/s. CPU per event (from /proc, robust to a shared machine) is reported beside
each rate: the API's, and the bare handler's per request. The worker runs throughout,
routing and indexing what the API accepts, as it would in production on one box.
"""

from __future__ import annotations

from typing import Any

from bench.context import Bench, Outcome, Row
from bench.stack import CEILING_TOPIC, cpu_seconds

EVENT_TYPE = "ingest.event"  # nothing subscribes: the router reads, matches nothing
SINGLE_GOAL_RATIO = 0.6  # of the bare aiohttp handler
BATCH_GOAL_EVENTS_PER_S = 50_000  # batches of 1,000, acknowledged
KAFKA_CEILING_BATCH = 1000
KAFKA_CEILING_CONCURRENCY = 4


async def _http_ceiling(bench: Bench, count: int, concurrency: int, duration_s: float) -> Any:
    args = [
        "http",
        "--url",
        f"{bench.stack.receiver_url}/bare",
        "--shape",
        "event",
        "--count",
        str(count),
        "--concurrency",
        str(concurrency),
        "--duration-s",
        str(duration_s),
    ]
    cpu_before_s = cpu_seconds(bench.stack.pid("receiver"))
    result = await bench.load(args, "ceiling: bare aiohttp", count, duration_s + 60)
    cpu_s = cpu_seconds(bench.stack.pid("receiver")) - cpu_before_s
    result["server_cpu_ms_per_request"] = (
        round(cpu_s * 1000 / result["requests_ok"], 4) if result["requests_ok"] else None
    )
    return result


async def _kafka_ceiling(bench: Bench, count: int, duration_s: float) -> Any:
    args = [
        "kafka",
        "--bootstrap",
        bench.stack.kafka_bootstrap,
        "--topic",
        CEILING_TOPIC,
        "--count",
        str(count),
        "--duration-s",
        str(duration_s),
        "--batch",
        str(KAFKA_CEILING_BATCH),
        "--concurrency",
        str(KAFKA_CEILING_CONCURRENCY),
    ]
    return await bench.load(args, "ceiling: bare aiokafka", count, duration_s + 60)


async def _publish(
    bench: Bench, batch: int, requests: int, concurrency: int, duration_s: float
) -> Any:
    path = "/v2/events" if batch == 1 else "/v2/events/batch"
    args = [
        *bench.api_load_args(path),
        "--shape",
        "event" if batch == 1 else "batch",
        "--batch",
        str(batch),
        "--count",
        str(requests),
        "--concurrency",
        str(concurrency),
        "--duration-s",
        str(duration_s),
        "--type-pattern",
        EVENT_TYPE,
    ]
    label = "POST /v2/events" if batch == 1 else f"POST /v2/events/batch x{batch}"
    return await bench.load(args, label, requests * batch, duration_s + 60)


async def run(bench: Bench) -> Outcome:
    """Measure the ceilings, then the three publish paths."""
    duration_s = bench.seconds(2, 20)
    single = bench.size(5_000, 40_000)
    concurrency = 32
    cases = [  # (events per request, requests at most, concurrent requests)
        (1, single, concurrency),
        (100, bench.size(300, 2_000), 8),
        (1000, bench.size(40, 200), 4),
    ]
    outcome = Outcome("ingest")
    outcome.settings = {
        "duration_s_at_most": duration_s,
        "cases": [{"batch": b, "requests": r, "concurrency": c} for b, r, c in cases],
        "event_bytes_delivered": 350,
        "acks": "all",
    }
    await bench.settle()
    http_ceiling = await _http_ceiling(bench, single, concurrency, duration_s)
    kafka_ceiling = await _kafka_ceiling(bench, bench.size(100_000, 1_000_000), duration_s)
    outcome.figures["ceiling_bare_aiohttp"] = http_ceiling
    outcome.figures["ceiling_bare_aiokafka"] = kafka_ceiling
    for batch, requests, parallel in cases:
        await bench.settle()
        api_cpu_before_s = cpu_seconds(bench.stack.pid("api"))
        result = await _publish(bench, batch, requests, parallel, duration_s)
        api_cpu_s = cpu_seconds(bench.stack.pid("api")) - api_cpu_before_s
        result["api_cpu_s"] = round(api_cpu_s, 2)
        result["api_cpu_ms_per_event"] = (
            round(api_cpu_s * 1000 / result["events_ok"], 4) if result["events_ok"] else None
        )
        outcome.figures[f"batch_{batch}"] = result
        if batch == 1:
            ceiling, unit = http_ceiling["requests_per_s"], "events/s"
            note = (
                f"vs bare aiohttp (goal {SINGLE_GOAL_RATIO}; its server"
                f" {http_ceiling['server_cpu_ms_per_request']} ms CPU/request)"
            )
        else:
            ceiling, unit = kafka_ceiling["events_per_s"], "events/s"
            note = "vs bare aiokafka" + (
                f" (goal {BATCH_GOAL_EVENTS_PER_S:,} events/s)" if batch == 1000 else ""
            )
        failed = result["requests_failed"]
        outcome.rows.append(
            Row(
                "ingest",
                "POST /v2/events" if batch == 1 else f"POST /v2/events/batch ({batch})",
                result["events_per_s"],
                unit,
                ceiling,
                f"{note}; API {result['api_cpu_ms_per_event']} ms CPU/event"
                + (f"; {failed} requests failed" if failed else ""),
            )
        )
    outcome.rows.append(
        Row("ingest", "ceiling: bare aiohttp handler", http_ceiling["requests_per_s"], "req/s")
    )
    outcome.rows.append(
        Row("ingest", "ceiling: bare aiokafka producer", kafka_ceiling["events_per_s"], "msgs/s")
    )
    outcome.figures["lag_after"] = await bench.settle()
    return outcome
