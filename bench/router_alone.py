"""The router by itself, and its ceiling, for the `router` scenario (bench/scenarios/router.py).

    python -m bench.router_alone router
    python -m bench.router_alone ceiling --bootstrap HOST:PORT --count N [--produce TOPIC]

`router` runs a worker process of the router role alone (`herald worker --role router`:
Faust's agents, fold and router, the destination view, the sampler and the worker's HTTP
server), without the delivery runner or the indexer (it reads the same HERALD_* settings as
`herald worker`): the scenario's figures are then the router's own CPU, not the delivery or
indexing of what it routed.

`ceiling` is a bare aiokafka loop over the same `events` records: `getmany()` batches,
orjson-decoded (the router needs the fields of each), and with `--produce` one record
per event sent to TOPIC without awaiting each send, the batch's sends awaited before the
next fetch (as the router waits for its deliveries' acknowledgements). It prints one JSON
line: events read, seconds from the first record to the last, and CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from typing import Any

import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.roles import ROUTER
from pipeline.settings import Settings
from pipeline.topics import EVENTS, load_specs
from pipeline.worker import run_worker

FETCH_MAX_RECORDS = 2000


def run_router() -> None:
    """Run a worker process of the router role alone (pipeline/worker.py `run_worker`)."""
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    run_worker(Settings(), frozenset({ROUTER}))


async def _ceiling(bootstrap: str, count: int, produce: str | None) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await consumer.start()
    await producer.start()
    try:
        partitions = {s.name: s.partitions for s in load_specs(Settings().topics_file)}
        tps = [TopicPartition(EVENTS, p) for p in range(partitions[EVENTS])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        read, started, cpu_started = 0, 0.0, 0.0
        while read < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=FETCH_MAX_RECORDS)
            if not started:
                started, cpu_started = time.monotonic(), _cpu_s()
            sends = []
            for records in batches.values():
                for record in records:
                    event = orjson.loads(record.value)
                    read += 1
                    if produce is not None:
                        sends.append(
                            await producer.send(produce, record.value, key=event["id"].encode())
                        )
            await asyncio.gather(*sends)
        elapsed_s = time.monotonic() - started
        return {
            "events": read,
            "elapsed_s": round(elapsed_s, 3),
            "events_per_s": round(read / elapsed_s, 1),
            "cpu_s": round(_cpu_s() - cpu_started, 3),
            "produced": produce is not None,
        }
    finally:
        await producer.stop()
        await consumer.stop()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    """`router` or `ceiling`; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m bench.router_alone")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("router")
    ceiling = commands.add_parser("ceiling")
    ceiling.add_argument("--bootstrap", required=True)
    ceiling.add_argument("--count", type=int, required=True)
    ceiling.add_argument("--produce", default=None)
    args = parser.parse_args(argv)
    if args.command == "router":
        sys.argv = sys.argv[:1]  # Faust's worker reads the command line too
        run_router()
        return 0
    result = uvloop.run(_ceiling(args.bootstrap, args.count, args.produce))
    sys.stdout.write(orjson.dumps({"result": result}).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
