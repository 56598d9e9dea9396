"""The load generator: a separate process that POSTs events (or bare requests) or produces to
Kafka, bounded in count and in time, and prints JSON lines on stdout.

    python -m bench.load http --url URL [--batch N] --count N --concurrency C --duration-s T
                              [--rate EVENTS_PER_S] [--type-pattern 'fan.d{i}' --type-count K]
                              [--header 'Name: value' ...] [--shape event|batch|delivery]
    python -m bench.load kafka --bootstrap HOST:PORT --topic T --count N --duration-s T
                               [--batch N] [--concurrency C]

Lines are `{"progress": <events done>}` now and then, and one `{"result": {...}}` at the end.
Every event's `data.sent_at` is the loader's wall clock when its request was sent, which the
receiver turns into publish → receive latency. Shapes:

- `event`: one event `{type, data}` per request (POST /v2/events);
- `batch`: `{"events": [...]}` with `--batch` events (POST /v2/events/batch);
- `delivery`: what Herald's webhook sink sends (the event envelope plus the webhook-id and
  webhook-timestamp headers), for the webhook ceiling against the receiver.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import uvloop

# Pads every delivered event envelope to about 350 bytes, a typical webhook payload, so the
# bench's figures are per event of that size.
PAD = "x" * 150
PROGRESS_INTERVAL_S = 0.5


@dataclass
class Tally:
    """What the loader did, for its result line."""

    requests_ok: int = 0
    requests_failed: int = 0
    events_ok: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    request_ms: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class HttpPlan:
    """One HTTP load run."""

    url: str
    shape: str
    batch: int
    count: int
    concurrency: int
    duration_s: float
    rate: float | None
    type_pattern: str
    type_count: int
    headers: dict[str, str]


def emit(line: dict[str, Any]) -> None:
    """One JSON line for the orchestrator."""
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
    sys.stdout.flush()


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50 and p99 (nearest rank) of `values`, rounded."""
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p99": None}
    return {
        "p50": round(ordered[len(ordered) // 2], 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    }


def _event(plan: HttpPlan, seq: int, sent_at: float) -> dict[str, Any]:
    return {
        "type": plan.type_pattern.format(i=seq % plan.type_count),
        "data": {"sent_at": sent_at, "seq": seq, "pad": PAD},
    }


def request_body(plan: HttpPlan, first_seq: int) -> tuple[bytes, dict[str, str]]:
    """The body and extra headers of the request carrying events `first_seq`…"""
    sent_at = time.time()
    if plan.shape == "batch":
        events = [_event(plan, first_seq + k, sent_at) for k in range(plan.batch)]
        return orjson.dumps({"events": events}), {}
    event = _event(plan, first_seq, sent_at)
    if plan.shape == "delivery":
        envelope = {
            "id": f"evt_bench{first_seq:020d}",
            "object": "event",
            "created_at": "2026-01-01T00:00:00.000Z",
            **event,
        }
        webhook_id = f"evdl_bench{first_seq:020d}"
        return orjson.dumps(envelope), {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(sent_at)),
            "webhook-signature": "v1,bench",
        }
    return orjson.dumps(event), {}


async def _one(
    session: aiohttp.ClientSession, plan: HttpPlan, first_seq: int, tally: Tally
) -> None:
    body, extra = request_body(plan, first_seq)
    started = time.perf_counter()
    try:
        async with session.post(plan.url, data=body, headers=extra) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.requests_failed += 1
        tally.statuses[type(exc).__name__] += 1
        return
    tally.request_ms.append((time.perf_counter() - started) * 1000)
    tally.statuses[str(status)] += 1
    if 200 <= status < 300:
        tally.requests_ok += 1
        tally.events_ok += plan.batch if plan.shape == "batch" else 1
    else:
        tally.requests_failed += 1


async def _report_progress(tally: Tally) -> None:
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL_S)
        emit({"progress": tally.events_ok})


async def _closed_loop(session: aiohttp.ClientSession, plan: HttpPlan, tally: Tally) -> None:
    """`concurrency` workers, each sending its next request as soon as the last returns."""
    per_request = plan.batch if plan.shape == "batch" else 1
    counter = itertools.count()
    deadline = time.monotonic() + plan.duration_s

    async def worker() -> None:
        while time.monotonic() < deadline:
            index = next(counter)
            if index >= plan.count:
                return
            await _one(session, plan, index * per_request, tally)

    await asyncio.gather(*(worker() for _ in range(plan.concurrency)))


async def _open_loop(session: aiohttp.ClientSession, plan: HttpPlan, tally: Tally) -> None:
    """A request every batch/rate seconds on a fixed schedule (at most `concurrency` open)."""
    assert plan.rate is not None
    per_request = plan.batch if plan.shape == "batch" else 1
    interval_s = per_request / plan.rate
    slots = asyncio.Semaphore(plan.concurrency)
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()

    async def send(index: int) -> None:
        try:
            await _one(session, plan, index * per_request, tally)
        finally:
            slots.release()

    for index in range(plan.count):
        due = start + index * interval_s
        if due - start >= plan.duration_s:
            break
        delay_s = due - time.monotonic()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        await slots.acquire()
        task = asyncio.create_task(send(index))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=60)


async def run_http(plan: HttpPlan) -> dict[str, Any]:
    """Run one HTTP load and return its figures."""
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=plan.concurrency, limit_per_host=plan.concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    headers = {"content-type": "application/json", **plan.headers}
    progress = asyncio.create_task(_report_progress(tally))
    started_at = time.time()
    started = time.perf_counter()
    try:
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=headers
        ) as session:
            if plan.rate is None:
                await _closed_loop(session, plan, tally)
            else:
                await _open_loop(session, plan, tally)
    finally:
        progress.cancel()
    elapsed_s = time.perf_counter() - started
    return {
        "started_at": started_at,
        "finished_at": time.time(),
        "elapsed_s": round(elapsed_s, 3),
        "requests_ok": tally.requests_ok,
        "requests_failed": tally.requests_failed,
        "events_ok": tally.events_ok,
        "requests_per_s": round(tally.requests_ok / elapsed_s, 1),
        "events_per_s": round(tally.events_ok / elapsed_s, 1),
        "request_ms": percentiles(tally.request_ms),
        "statuses": dict(tally.statuses),
    }


def herald_record(seq: int) -> tuple[bytes, bytes]:
    """(key, value) of an event as Herald's API writes it to `events` (envelope, tenant,
    stamp) with the loader's data: the records the producer ceiling sends."""
    event_id = f"evt_01KBENCH{seq:017d}"
    return event_id.encode(), orjson.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": "ingest.event",
            "data": {"sent_at": time.time(), "seq": seq, "pad": PAD},
            "created_at": "2026-01-01T00:00:00.000Z",
            "tenant": "bench",
            "route_after": {"0": 12, "1": 7, "2": 9},
        }
    )


async def run_kafka(
    bootstrap: str, topic: str, count: int, duration_s: float, batch: int, concurrency: int
) -> dict[str, Any]:
    """The producer ceiling: acks=all, idempotent; `concurrency` tasks each send `batch`
    records at a time, one BatchBuilder per partition (the cheapest way through aiokafka),
    and wait for the acknowledgements before their next batch."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        max_batch_size=1024 * 1024,
    )
    await producer.start()
    partitions = sorted(await producer.partitions_for(topic))
    records = [herald_record(seq) for seq in range(batch)]
    # aiokafka queues one batch per partition and makes the other senders poll for the slot
    # with a timeout that shrinks on every wake-up: they take turns instead.
    turns = {p: asyncio.Lock() for p in partitions}
    sent = 0
    counter = itertools.count()
    deadline = time.monotonic() + duration_s

    async def send_batches() -> None:
        nonlocal sent
        while time.monotonic() < deadline and next(counter) * batch < count:
            builders = {p: producer.create_batch() for p in partitions}
            for index, (key, value) in enumerate(records):
                builder = builders[partitions[index % len(partitions)]]
                if builder.append(key=key, value=value, timestamp=None) is None:
                    raise RuntimeError("a ceiling batch outgrew max_batch_size")
            futures = []
            for p, builder in builders.items():
                async with turns[p]:
                    futures.append(await producer.send_batch(builder, topic, partition=p))
            await asyncio.gather(*futures)
            sent += batch
            emit({"progress": sent})

    started_at = time.time()
    started = time.perf_counter()
    try:
        await asyncio.gather(*(send_batches() for _ in range(concurrency)))
    finally:
        await producer.stop()
    elapsed_s = time.perf_counter() - started
    return {
        "started_at": started_at,
        "finished_at": time.time(),
        "elapsed_s": round(elapsed_s, 3),
        "events_ok": sent,
        "events_per_s": round(sent / elapsed_s, 1),
        "value_bytes": len(records[0][1]),
        "batch": batch,
        "concurrency": concurrency,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    http = modes.add_parser("http")
    http.add_argument("--url", required=True)
    http.add_argument("--shape", choices=["event", "batch", "delivery"], default="event")
    http.add_argument("--batch", type=int, default=1)
    http.add_argument("--count", type=int, required=True, help="requests at most")
    http.add_argument("--concurrency", type=int, default=32)
    http.add_argument("--duration-s", type=float, required=True)
    http.add_argument("--rate", type=float, default=None, help="events/s (open loop)")
    http.add_argument("--type-pattern", default="bench.event")
    http.add_argument("--type-count", type=int, default=1)
    http.add_argument("--header", action="append", default=[])
    kafka = modes.add_parser("kafka")
    kafka.add_argument("--bootstrap", required=True)
    kafka.add_argument("--topic", required=True)
    kafka.add_argument("--count", type=int, required=True)
    kafka.add_argument("--duration-s", type=float, required=True)
    kafka.add_argument("--batch", type=int, default=1000, help="records per batch")
    kafka.add_argument("--concurrency", type=int, default=4, help="batches in flight")
    return parser


def main() -> None:
    """Parse the command line, run the load, print the result line."""
    args = _parser().parse_args()
    if args.mode == "kafka":
        result = uvloop.run(
            run_kafka(
                args.bootstrap,
                args.topic,
                args.count,
                args.duration_s,
                args.batch,
                args.concurrency,
            )
        )
    else:
        headers = dict(h.split(":", 1) for h in args.header)
        plan = HttpPlan(
            url=args.url,
            shape=args.shape,
            batch=args.batch if args.shape == "batch" else 1,
            count=args.count,
            concurrency=args.concurrency,
            duration_s=args.duration_s,
            rate=args.rate,
            type_pattern=args.type_pattern,
            type_count=max(1, args.type_count),
            headers={k.strip(): v.strip() for k, v in headers.items()},
        )
        result = uvloop.run(run_http(plan))
    emit({"result": result})


if __name__ == "__main__":
    main()
