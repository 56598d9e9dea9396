"""The bare aiokafka ceiling of the `source` scenario (bench/scenarios/source.py).

    python -m bench.source_ceiling --bootstrap HOST:PORT --topic T --group G --to TOPIC --count N

What the ingest role does with a source, minus Herald: a consumer group on the source
topic, `getmany()` batches (as many records as a source's max_batch), each record
orjson-decoded (a source decodes each to validate it) and produced to TOPIC (acks=all)
without awaiting each send, the batch's sends awaited, then its offsets committed. The
scenario measures it the same way as the ingest process: by the group's committed offsets.
It prints one JSON result line when it has committed `count` records.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

MAX_BATCH = 2000


async def _run(args: argparse.Namespace) -> dict[str, int]:
    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=MAX_BATCH,
    )
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=0)
    await consumer.start()
    await producer.start()
    try:
        done = 0
        while done < args.count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=MAX_BATCH)
            sends = []
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value)
                    sends.append(await producer.send(args.to, record.value, key=record.key))
            await asyncio.gather(*sends)
            if batches:
                await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batches.items()})
            done += len(sends)
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
