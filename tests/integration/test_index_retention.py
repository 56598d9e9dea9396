"""The retention sweep against the real PostgreSQL: old rows go, new rows stay, in bounded
batches found through a created_at index, by one sweeper at a time."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from pipeline.db import create_pool, migrate
from pipeline.retention import (
    AGED_TABLES,
    DELETE_BATCH,
    STATS_AGE_COLUMN,
    STATS_TABLE,
    SWEEP_LOCK,
    sweep,
)
from tests.integration.conftest import Services

RETENTION_DAYS = 30


@pytest.fixture
async def pool(services: Services) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(services.database_url)
    try:
        await migrate(pool)
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def tenant(pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A tenant of the test's own; whatever the sweep left of it is deleted afterwards
    (its rows are no deliveries of the stack's, and would look stuck to a later test)."""
    name = f"retention-{uuid.uuid4().hex[:8]}"
    yield name
    async with pool.acquire() as connection:
        for table in (*AGED_TABLES, "idempotency_keys"):
            await connection.execute(f"delete from {table} where tenant = $1", name)  # noqa: S608 - constant names


async def _insert(connection: asyncpg.Connection, tenant: str, prefix: str, age_days: int) -> None:
    """One event, delivery and attempt `age_days` old, with ids starting with `prefix`."""
    await connection.execute(
        "insert into events (tenant, id, type, data, created_at)"
        " values ($1, $2, 'a.b', '{}', now() - make_interval(days => $3))",
        tenant,
        f"{prefix}_evt",
        age_days,
    )
    await connection.execute(
        "insert into deliveries (id, tenant, event_id, event_type, destination_id, created_at,"
        " updated_at) values ($1, $2, $3, 'a.b', 'evtd_x', now() - make_interval(days => $4),"
        " now())",
        f"{prefix}_dlv",
        tenant,
        f"{prefix}_evt",
        age_days,
    )
    await connection.execute(
        "insert into delivery_attempts (id, delivery_id, tenant, event_id, destination_id,"
        " attempt, outcome, created_at) values ($1, $2, $3, $4, 'evtd_x', 1, 'success',"
        " now() - make_interval(days => $5))",
        f"{prefix}_att",
        f"{prefix}_dlv",
        tenant,
        f"{prefix}_evt",
        age_days,
    )


async def _remaining(connection: asyncpg.Connection, tenant: str) -> set[str]:
    rows = await connection.fetch(
        "select id from events where tenant = $1 union all "
        "select id from deliveries where tenant = $1 union all "
        "select id from delivery_attempts where tenant = $1 union all "
        "select key from idempotency_keys where tenant = $1",
        tenant,
    )
    return {r[0] for r in rows}


async def test_sweep_drops_only_old_rows(pool: asyncpg.Pool, tenant: str) -> None:
    async with pool.acquire() as connection:
        await _insert(connection, tenant, "old", RETENTION_DAYS + 10)
        await _insert(connection, tenant, "new", RETENTION_DAYS - 1)
        await connection.execute(
            "insert into idempotency_keys (tenant, key, request_hash, created_at) values "
            "($1, 'old-key', 'h', now() - interval '25 hours'), "
            "($1, 'new-key', 'h', now() - interval '23 hours')",
            tenant,
        )
    report = await sweep(pool, retention_days=RETENTION_DAYS)
    async with pool.acquire() as connection:
        remaining = await _remaining(connection, tenant)
    assert report.swept
    assert remaining == {"new_evt", "new_dlv", "new_att", "new-key"}


async def test_sweep_deletes_in_bounded_batches(pool: asyncpg.Pool, tenant: str) -> None:
    async with pool.acquire() as connection:
        for n in range(25):
            await _insert(connection, tenant, f"old{n}", RETENTION_DAYS + 1)
    report = await sweep(pool, retention_days=RETENTION_DAYS, batch_rows=10)
    async with pool.acquire() as connection:
        remaining = await _remaining(connection, tenant)
    assert remaining == set()
    for table in AGED_TABLES:
        assert report.deleted(table) >= 25
        assert max(report.batches[table]) <= 10
        assert len(report.batches[table]) >= 3


async def test_a_second_sweeper_skips_while_one_holds_the_lock(
    pool: asyncpg.Pool, services: Services, tenant: str
) -> None:
    async with pool.acquire() as connection:
        await _insert(connection, tenant, "old", RETENTION_DAYS + 1)
    other = await asyncpg.connect(services.database_url)  # another process's sweeper
    try:
        assert await other.fetchval("select pg_try_advisory_lock($1)", SWEEP_LOCK)
        skipped = await sweep(pool, retention_days=RETENTION_DAYS)
        async with pool.acquire() as connection:
            assert await _remaining(connection, tenant) == {"old_evt", "old_dlv", "old_att"}
        assert not skipped.swept
        await other.execute("select pg_advisory_unlock($1)", SWEEP_LOCK)
        assert (await sweep(pool, retention_days=RETENTION_DAYS)).swept
    finally:
        await other.close()
    async with pool.acquire() as connection:
        assert await _remaining(connection, tenant) == set()


LEADING_COLUMN = """
select a.attname from pg_index i
join pg_class c on c.oid = i.indexrelid
join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
where c.relname = $1"""


@pytest.mark.parametrize(
    ("table", "column"),
    [
        *((table, "created_at") for table in (*AGED_TABLES, "idempotency_keys")),
        (STATS_TABLE, STATS_AGE_COLUMN),
    ],
)
async def test_each_batch_finds_its_rows_through_a_created_at_index(
    pool: asyncpg.Pool, table: str, column: str
) -> None:
    """Each batch reads an index that leads with its age column (created_at): not the
    table, nor an index on (tenant, created_at) or (destination_id, created_at) read from
    end to end."""
    statement = DELETE_BATCH.format(table=table, column=column)
    inner = statement.split("array(", 1)[1].rsplit("))", 1)[0]
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("set local enable_seqscan = off")
        plan = "\n".join(r[0] for r in await connection.fetch(f"explain {inner}", 86400.0, 10))
        used = re.findall(r"Index (?:Only )?Scan(?: Backward)? using (\w+)", plan)
        leading = {await connection.fetchval(LEADING_COLUMN, name) for name in used}
    assert leading == {column}, plan
