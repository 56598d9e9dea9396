"""The index drops what is older than the retention, and expired idempotency keys."""

from __future__ import annotations

import asyncpg

from pipeline.db import create_pool, migrate
from pipeline.indexer import sweep
from tests.integration.conftest import Services


async def test_sweep_drops_only_old_rows(services: Services) -> None:
    pool = await create_pool(services.database_url)
    try:
        await migrate(pool)
        async with pool.acquire() as connection:
            await _insert(connection, "evt_old_retention", 40)
            await _insert(connection, "evt_new_retention", 1)
            await connection.execute(
                "insert into idempotency_keys (tenant, key, request_hash, created_at) values "
                "('t', 'old-key', 'h', now() - interval '25 hours'), "
                "('t', 'new-key', 'h', now() - interval '1 hour') on conflict do nothing"
            )
        await sweep(pool, retention_days=30)
        async with pool.acquire() as connection:
            events = {
                r["id"]
                for r in await connection.fetch("select id from events where id like '%_retention'")
            }
            keys = {
                r["key"]
                for r in await connection.fetch(
                    "select key from idempotency_keys where tenant = 't'"
                )
            }
        assert events == {"evt_new_retention"}
        assert keys == {"new-key"}
    finally:
        await pool.close()


async def _insert(connection: asyncpg.Connection, event_id: str, age_days: int) -> None:
    await connection.execute(
        "insert into events (tenant, id, type, data, created_at) values "
        "('t', $1, 'a.b', '{}', now() - make_interval(days => $2)) on conflict do nothing",
        event_id,
        age_days,
    )
