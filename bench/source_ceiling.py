"""The bare aiokafka ceiling of the `source` scenario (bench/scenarios/source.py).

    python -m bench.source_ceiling --bootstrap HOST:PORT --topic T --group G --to TOPIC --count N

The best plain aiokafka does what the ingest role does with a source, minus Herald: a
consumer group on the source topic fetching large `getmany()` batches (fetch sizes raised
past their defaults), each record orjson-decoded (a source decodes each to validate it) and
produced to TOPIC (acks=all, not idempotent, a 5 ms linger and 1 MiB batches) without
awaiting each send; the next batch is fetched and sent while the previous one waits for its
acknowledgements, and each batch's offsets are committed, in order, once it is acknowledged.
The scenario measures it the same way as the ingest process: by the group's committed offsets.
It prints one JSON result line when it has committed `count` records.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

MAX_BATCH = 5000
FETCH_MAX_BYTES = 64 * 1024 * 1024
PARTITION_FETCH_BYTES = 8 * 1024 * 1024
LINGER_MS = 5
BATCH_BYTES = 1024 * 1024


async def _run(args: argparse.Namespace) -> dict[str, int]:
    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=MAX_BATCH,
        fetch_max_bytes=FETCH_MAX_BYTES,
        max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap,
        acks="all",
        linger_ms=LINGER_MS,
        max_batch_size=BATCH_BYTES,
    )
    await consumer.start()
    await producer.start()
    try:
        done = 0
        previous: tuple[asyncio.Future[Any], dict[Any, int]] | None = None
        previous_count = 0
        while done < args.count:
            # With a batch in flight, take only what is fetched already: else commit it first.
            wait_ms = 1000 if previous is None else 0
            batches = await consumer.getmany(timeout_ms=wait_ms, max_records=MAX_BATCH)
            sends = []
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value)
                    sends.append(await producer.send(args.to, record.value, key=record.key))
            current = (
                asyncio.gather(*sends),
                {tp: rs[-1].offset + 1 for tp, rs in batches.items()},
            )
            if previous is not None:
                await previous[0]
                await consumer.commit(previous[1])
                done += previous_count
            previous, previous_count = (current, len(sends)) if sends else (None, 0)
        return {"events": done}
    finally:
        await producer.stop()
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    """See the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m bench.source_ceiling")
    for name in ("--bootstrap", "--topic", "--group", "--to"):
        parser.add_argument(name, required=True)
    parser.add_argument("--count", type=int, required=True)
    result = uvloop.run(_run(parser.parse_args(argv)))
    sys.stdout.write(orjson.dumps({"result": result}).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
