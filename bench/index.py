"""The indexer's write path alone: CPU per 1,000 deliveries, in Python and in PostgreSQL.

    .venv/bin/python -m bench.index [--deliveries N] [--port-offset 300] [--out FILE]

Starts the bench PostgreSQL (scripts/postgres.sh on the bench ports, a fresh `herald`
database), then feeds `pipeline.indexer.Batch` what the indexer consumes for N deliveries
at one subscriber per event: the event, the delivery record and its attempts (one in ten
fails once and succeeds on its retry), the attempts trailing their deliveries by a few
hundred records so that some land in the batch after their delivery's, in batches of
`MAX_BATCH_RECORDS` records, each written in one transaction as the indexer does. The same
records are then fed again (a replayed topic) and every summary is checked: the index
must be the same after the replay as before.

Reports this process's CPU (parsing and the asyncpg side) and the CPU of its PostgreSQL
backend (/proc/<pid>/stat of `pg_backend_pid()`), per 1,000 deliveries: CPU time, not
wall time, so it compares across runs on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from bench.stack import DEFAULT_PORT_OFFSET, ROOT, Ports, cpu_seconds, recreate_database
from pipeline.db import MIGRATIONS
from pipeline.indexer import MAX_BATCH_RECORDS, Batch
from pipeline.topics import ATTEMPTS, DELIVERIES, EVENTS

# How many records an attempt trails its delivery record by (a delivery takes a moment).
ATTEMPT_LAG_RECORDS = 300
FAILING_ONE_IN = 10
START = datetime(2026, 1, 1, tzinfo=UTC)
DATA = {"order": {"id": "ord_0001", "amount_cents": 1999, "currency": "EUR",
                  "customer": {"id": "cus_0001", "email": "someone@example.com"},
                  "lines": [{"sku": f"sku-{n}", "quantity": n} for n in range(6)]}}  # fmt: skip


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def records(deliveries: int, lag: int = ATTEMPT_LAG_RECORDS) -> Iterator[tuple[str, bytes]]:
    """(topic, value) in the order the indexer would fetch them."""
    trailing: list[tuple[str, bytes]] = []
    for n in range(deliveries):
        at = START + timedelta(milliseconds=n)
        event = {"id": f"evt_{n:08d}", "object": "event", "type": "order.paid", "data": DATA,
                 "created_at": _iso(at), "tenant": "bench"}  # fmt: skip
        delivery = {"id": f"evdl_{n:08d}", "event": event, "tenant": "bench",
                    "destination_id": "evtd_hot", "destination_generation": "chg_1",
                    "attempt": 0, "due_at": None, "routed_at": _iso(at)}  # fmt: skip
        yield EVENTS, orjson.dumps(event)
        yield DELIVERIES, orjson.dumps(delivery)
        trailing.extend((ATTEMPTS, orjson.dumps(a)) for a in _attempts(n, event, at))
        if len(trailing) > lag:
            yield trailing.pop(0)
    yield from trailing


def _attempts(n: int, event: dict[str, Any], at: datetime) -> list[dict[str, Any]]:
    base = {"delivery_id": f"evdl_{n:08d}", "event_id": event["id"], "event_type": event["type"],
            "tenant": "bench", "destination_id": "evtd_hot", "destination_generation": "chg_1",
            "latency_ms": 3.2, "error": None, "response_body": "ok"}  # fmt: skip
    ok = {"outcome": "success", "response_status": 200, "next": None}
    if n % FAILING_ONE_IN:
        return [{**base, **ok, "id": f"evat_{n:08d}_0", "attempt": 0, "created_at": _iso(at)}]
    due = at + timedelta(seconds=1)
    failed = {"outcome": "failed", "response_status": 503, "error": "HTTP 503",
              "next": {"tier": 1, "due_ms": int(due.timestamp() * 1000)}}  # fmt: skip
    return [
        {**base, **failed, "id": f"evat_{n:08d}_0", "attempt": 0, "created_at": _iso(at)},
        {**base, **ok, "id": f"evat_{n:08d}_1", "attempt": 1, "created_at": _iso(due)},
    ]


async def _feed(
    connection: asyncpg.Connection, stream: list[tuple[str, bytes]]
) -> dict[str, float]:
    """Index the stream in batches; CPU seconds of parsing, of writing and of the backend."""
    backend = await connection.fetchval("select pg_backend_pid()")
    parse_s = write_s = 0.0
    backend_before = cpu_seconds(backend)
    for start in range(0, len(stream), MAX_BATCH_RECORDS):
        began = time.process_time()
        batch = Batch()
        for topic, value in stream[start : start + MAX_BATCH_RECORDS]:
            batch.add(topic, value)
        parsed = time.process_time()
        await batch.write(connection)
        parse_s += parsed - began
        write_s += time.process_time() - parsed
    return {
        "parse_s": parse_s,
        "write_s": write_s,
        "backend_s": cpu_seconds(backend) - backend_before,
    }


async def _index_state(connection: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await connection.fetch(
        "select id, status, attempts, last_attempt_at, next_attempt_at, created_at,"
        " (select count(*) from delivery_attempts a where a.delivery_id = d.id) as rows"
        " from deliveries d order by id"
    )
    return [tuple(r) for r in rows]


async def _stats_state(connection: asyncpg.Connection) -> list[tuple[Any, ...]]:
    """Every rollup row (pipeline/stats.py), to compare before and after a replay."""
    rows = await connection.fetch("select * from delivery_stats order by 1, 2, 3, 4, 5, 6")
    return [tuple(r) for r in rows]


def _check(state: list[tuple[Any, ...]], deliveries: int) -> None:
    assert len(state) == deliveries, f"{len(state)} delivery rows for {deliveries}"
    for id_, status, attempts, last_at, next_at, _created, rows in state:
        failing = int(id_.removeprefix("evdl_")) % FAILING_ONE_IN == 0
        want = 2 if failing else 1
        assert (status, attempts, rows, next_at) == ("succeeded", want, want, None), id_
        assert last_at is not None, id_


async def _migrate(connection: asyncpg.Connection) -> None:
    for path in sorted(MIGRATIONS.glob("*.sql")):
        await connection.execute(path.read_text())


async def run(deliveries: int, port: int, lag: int) -> dict[str, Any]:
    """Index `deliveries` deliveries twice (fresh, then replayed); the figures of each pass."""
    await recreate_database(port)
    stream = list(records(deliveries, lag))
    connection = await asyncpg.connect(f"postgresql://herald@127.0.0.1:{port}/herald")
    try:
        await _migrate(connection)
        fresh = await _feed(connection, stream)
        state = await _index_state(connection)
        _check(state, deliveries)
        rollup = await _stats_state(connection)
        replayed = await _feed(connection, stream)
        assert await _index_state(connection) == state, "a replay changed the index"
        assert await _stats_state(connection) == rollup, "a replay changed the statistics"
    finally:
        await connection.close()
    per_k = 1000 / deliveries

    def figures(cpu: dict[str, float]) -> dict[str, float]:
        return {
            "python_cpu_ms_per_1k_deliveries": round(
                (cpu["parse_s"] + cpu["write_s"]) * 1000 * per_k, 1
            ),
            "python_parse_cpu_ms_per_1k_deliveries": round(cpu["parse_s"] * 1000 * per_k, 1),
            "postgres_backend_cpu_ms_per_1k_deliveries": round(cpu["backend_s"] * 1000 * per_k, 1),
        }

    return {
        "deliveries": deliveries,
        "records": len(stream),
        "batch_records": MAX_BATCH_RECORDS,
        "attempt_lag_records": lag,
        "fresh": figures(fresh),
        "replayed": figures(replayed),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "at": _iso(datetime.now(UTC)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.index", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument(
        "--attempt-lag",
        type=int,
        default=ATTEMPT_LAG_RECORDS,
        help="records between a delivery and its attempts (above the batch size: always"
        " in a later batch)",
    )
    parser.add_argument("--port-offset", type=int, default=DEFAULT_PORT_OFFSET)
    parser.add_argument("--out", help="also write the JSON result here")
    args = parser.parse_args()
    port = Ports.shifted(args.port_offset).postgres
    env = {**os.environ, "HERALD_PG_PORT": str(port),
           "HERALD_PG_DATA": str(ROOT / ".data" / "bench" / "postgres")}  # fmt: skip
    script = str(ROOT / "scripts" / "postgres.sh")
    subprocess.run([script, "start"], check=True, env=env, timeout=300, stdout=sys.stderr)
    try:
        result = asyncio.run(run(args.deliveries, port, args.attempt_lag))
    finally:
        subprocess.run([script, "stop"], check=False, env=env, timeout=120, stdout=sys.stderr)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    main()
