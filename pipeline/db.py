"""PostgreSQL, the query index: connection pools and schema migrations."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# Any number will do, as long as every Herald process uses the same one.
MIGRATION_LOCK = 7_274_000_001
# What a call to PostgreSQL raises when the database is down, unreachable or refuses it.
DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def create_pool(database_url: str, max_size: int = 10) -> asyncpg.Pool:
    """A pool that connects lazily, so a process starts even while the database is down."""
    pool: asyncpg.Pool = await asyncpg.create_pool(database_url, min_size=0, max_size=max_size)
    return pool


async def migrate(pool: asyncpg.Pool) -> list[int]:
    """Apply the SQL files of migrations/ not applied yet, in order; returns their versions.

    Safe to run from several processes at once: an advisory lock serializes them.
    """
    applied: list[int] = []
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("select pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await connection.execute(
            "create table if not exists schema_migrations ("
            " version integer primary key, applied_at timestamptz not null default now())"
        )
        done = {
            r["version"] for r in await connection.fetch("select version from schema_migrations")
        }
        for path in sorted(MIGRATIONS.glob("*.sql")):
            version = int(path.name.split("_", 1)[0])
            if version in done:
                continue
            await connection.execute(path.read_text())
            await connection.execute("insert into schema_migrations (version) values ($1)", version)
            applied.append(version)
    if applied:
        log.info("applied migrations %s", applied)
    return applied
