"""A delivery's summary is kept from the attempts of each batch (issue 14): an attempt
indexed late never moves it back, a replayed batch or a duplicate record never counts
twice, and migration 014 applies to a database that already holds summaries."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import pytest

from pipeline.db import MIGRATIONS, create_pool, migrate
from pipeline.indexer import Batch
from pipeline.topics import ATTEMPTS, DELIVERIES, EVENTS
from tests.integration.conftest import Services

TENANT = "idx_summary"  # this file's own tenant, in the index only


@pytest.fixture
async def pool(services: Services) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(services.database_url)
    await migrate(pool)
    yield pool
    # Pending deliveries no worker will attempt: the end-of-session check must not see them.
    async with pool.acquire() as connection:
        for table in ("delivery_attempts", "deliveries", "events"):
            await connection.execute(
                f"delete from {table} where tenant = $1",  # noqa: S608 - constant
                TENANT,
            )
    await pool.close()


async def _index(pool: asyncpg.Pool, *records: tuple[str, dict[str, Any]]) -> None:
    batch = Batch()
    for topic, record in records:
        batch.add(topic, orjson.dumps(record))
    async with pool.acquire() as connection:
        await batch.write(connection)


def _records(delivery_id: str) -> tuple[dict[str, Any], Any]:
    event = {"id": f"evt_{delivery_id}", "object": "event", "type": "idx.made", "data": {},
             "created_at": "2026-01-01T00:00:00.000Z", "tenant": TENANT}  # fmt: skip
    delivery = {"id": delivery_id, "event": event, "tenant": TENANT,
                "destination_id": "evtd_summary", "destination_generation": "chg_1",
                "attempt": 0, "due_at": None, "routed_at": event["created_at"]}  # fmt: skip

    def attempt(suffix: str, n: int, outcome: str, at: str, **more: Any) -> dict[str, Any]:
        return {"id": f"evat_{delivery_id}_{suffix}", "delivery_id": delivery_id,
                "event_id": event["id"], "event_type": "idx.made", "tenant": TENANT,
                "destination_id": "evtd_summary", "destination_generation": "chg_1",
                "attempt": n, "outcome": outcome, "response_status": None, "latency_ms": 1.0,
                "error": None, "response_body": None, "created_at": at, **more}  # fmt: skip

    return delivery, attempt


async def _summary(pool: asyncpg.Pool, delivery_id: str) -> tuple[Any, ...]:
    async with pool.acquire() as connection:
        row = await connection.fetchrow(
            "select status, attempts, last_attempt_at, next_attempt_at,"
            " (select count(*) from delivery_attempts where delivery_id = $1) as rows"
            " from deliveries where tenant = $2 and id = $1",
            delivery_id,
            TENANT,
        )
    assert row is not None
    return tuple(row)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


RETRY = {"next": {"tier": 1, "due_ms": 1_767_225_660_000}}  # 2026-01-01T00:01:00Z
DUE = _at("2026-01-01T00:01:00Z")


async def test_an_attempt_indexed_after_a_later_one_never_moves_the_summary_back(
    pool: asyncpg.Pool,
) -> None:
    delivery_id = f"evdl_late_{time.time_ns()}"
    delivery, attempt = _records(delivery_id)
    late = "2026-01-01T00:01:00.000Z"
    await _index(pool, (DELIVERIES, delivery), (ATTEMPTS, attempt("1", 1, "success", late)))
    early = "2026-01-01T00:00:01.000Z"
    await _index(pool, (ATTEMPTS, attempt("0", 0, "failed", early, **RETRY)))
    assert await _summary(pool, delivery_id) == ("succeeded", 2, _at(late), None, 2)


async def test_a_replayed_batch_or_a_duplicate_record_counts_once(pool: asyncpg.Pool) -> None:
    delivery_id = f"evdl_replay_{time.time_ns()}"
    delivery, attempt = _records(delivery_id)
    first = attempt("0", 0, "failed", "2026-01-01T00:00:01.000Z", **RETRY)
    second = attempt("1", 1, "failed", "2026-01-01T00:00:31.000Z", **RETRY)
    records = [(DELIVERIES, delivery), (ATTEMPTS, first), (ATTEMPTS, first), (ATTEMPTS, second)]
    await _index(pool, *records)
    expected = ("retrying", 2, _at("2026-01-01T00:00:31Z"), DUE, 2)
    assert await _summary(pool, delivery_id) == expected
    await _index(pool, *records)  # the whole batch again, as after a failed offset commit
    await _index(pool, (ATTEMPTS, first))  # one record again, in a later batch
    assert await _summary(pool, delivery_id) == expected


async def test_attempts_at_the_same_instant_are_ordered_by_id_as_the_api_lists_them(
    pool: asyncpg.Pool,
) -> None:
    delivery_id = f"evdl_tie_{time.time_ns()}"
    delivery, attempt = _records(delivery_id)
    at = "2026-01-01T00:00:01.000Z"
    dead = attempt("b", 1, "failed", at, next={"dead_letter": "deliveries.dlq"})
    await _index(pool, (DELIVERIES, delivery), (ATTEMPTS, dead))
    await _index(pool, (ATTEMPTS, attempt("a", 0, "failed", at, **RETRY)))
    assert await _summary(pool, delivery_id) == ("failed", 2, _at(at), None, 2)


async def test_a_delivery_record_after_its_attempts_changes_nothing(pool: asyncpg.Pool) -> None:
    delivery_id = f"evdl_after_{time.time_ns()}"
    delivery, attempt = _records(delivery_id)
    at = "2026-01-01T00:00:01.000Z"
    await _index(pool, (ATTEMPTS, attempt("0", 0, "success", at)))
    before = await _summary(pool, delivery_id)
    await _index(pool, (DELIVERIES, delivery))
    assert await _summary(pool, delivery_id) == before == ("succeeded", 1, _at(at), None, 1)


async def test_a_publisher_id_reused_twice_within_one_batch(pool: asyncpg.Pool) -> None:
    """As if written one after the other: the duplicate is dropped, the reuse replaces."""
    event_id = f"evt_batch_reuse_{time.time_ns()}"

    def event(at: str, n: int) -> dict[str, Any]:
        return {"id": event_id, "object": "event", "type": "idx.made", "data": {"n": n},
                "created_at": at, "tenant": TENANT}  # fmt: skip

    await _index(
        pool,
        (EVENTS, event("2026-01-01T00:00:00.000Z", 1)),
        (EVENTS, event("2026-01-01T23:00:00.000Z", 2)),
        (EVENTS, event("2026-01-02T00:00:00.000Z", 3)),
    )
    async with pool.acquire() as connection:
        data = await connection.fetchval(
            "select data from events where tenant = $1 and id = $2", TENANT, event_id
        )
    assert orjson.loads(data) == {"n": 3}


def _migrations() -> dict[int, str]:
    """Each migration's SQL, by version."""
    return {int(p.name.split("_", 1)[0]): p.read_text() for p in MIGRATIONS.glob("*.sql")}


async def test_migration_014_applies_to_a_database_with_summaries(services: Services) -> None:
    name = f"herald_m014_{time.time_ns()}"
    host, port = services.database_url.split("@")[1].split("/")[0].split(":")
    admin = await asyncpg.connect(host=host, port=int(port), user="postgres", database="postgres")
    try:
        await admin.execute(f"create database {name} owner herald")
        connection = await asyncpg.connect(host=host, port=int(port), user="herald", database=name)
        try:
            sql = _migrations()
            for version in sorted(sql):
                if version < 14:
                    await connection.execute(sql[version])
            await _summaries_as_before_014(connection)
            await connection.execute(sql[14])
            rows = await connection.fetch("select id, last_attempt_id from deliveries order by id")
        finally:
            await connection.close()
    finally:
        await admin.execute(f"drop database if exists {name} with (force)")
        await admin.close()
    assert [tuple(r) for r in rows] == [("evdl_1", "evat_b"), ("evdl_2", None)]


async def _summaries_as_before_014(connection: asyncpg.Connection) -> None:
    await connection.execute(
        "insert into deliveries (id, tenant, event_id, event_type, destination_id, status,"
        " attempts, last_attempt_at, created_at, updated_at) values"
        " ('evdl_1', 't', 'evt_1', 'a.b', 'evtd_1', 'failed', 2, '2026-01-01T00:00:01Z',"
        "  '2026-01-01', now()),"
        " ('evdl_2', 't', 'evt_2', 'a.b', 'evtd_1', 'pending', 0, null, '2026-01-01', now())"
    )
    await connection.execute(
        "insert into delivery_attempts (id, delivery_id, tenant, event_id, destination_id,"
        " attempt, outcome, created_at) values"
        " ('evat_a', 'evdl_1', 't', 'evt_1', 'evtd_1', 0, 'failed', '2026-01-01T00:00:01Z'),"
        " ('evat_b', 'evdl_1', 't', 'evt_1', 'evtd_1', 1, 'failed', '2026-01-01T00:00:01Z'),"
        " ('evat_0', 'evdl_1', 't', 'evt_1', 'evtd_1', 0, 'failed', '2026-01-01T00:00:00Z')"
    )
