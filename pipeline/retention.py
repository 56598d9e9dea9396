"""The index's retention sweep: old rows deleted in bounded batches, by one process at a time.

Each table is swept in statements of at most `batch_rows` rows (found through a created_at
index), each its own transaction, so a sweep never holds a long lock nor writes one burst
of WAL. Every worker runs the sweep loop, but a session-level advisory lock lets only one
sweep at a time; the others skip their turn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import asyncpg

log = logging.getLogger(__name__)

# Any number will do, as long as every Herald process uses the same one (and it differs
# from pipeline.db.MIGRATION_LOCK).
SWEEP_LOCK = 7_274_000_002
BATCH_ROWS = 5000
IDEMPOTENCY_KEEP_S = 24 * 3600
AGED_TABLES = ("delivery_attempts", "deliveries", "events")
# The rows of one batch, oldest first, by physical address (every table has one; the
# created_at index finds them).
DELETE_BATCH = """
delete from {table} where ctid = any(array(
    select ctid from {table} where {column} < now() - make_interval(secs => $1)
    order by {column} limit $2))"""
# The statistics' rollup rows (migration 016) go by the start of the minute or hour they sum.
STATS_TABLE, STATS_AGE_COLUMN = "delivery_stats", "bucket_at"


@dataclass
class SweepReport:
    """What one sweep did: each delete statement's row count, by table."""

    swept: bool = True
    batches: dict[str, list[int]] = field(default_factory=dict)

    def deleted(self, table: str) -> int:
        """Rows deleted from `table`."""
        return sum(self.batches.get(table, []))


async def sweep(
    pool: asyncpg.Pool, retention_days: int, batch_rows: int = BATCH_ROWS
) -> SweepReport:
    """Delete index rows older than `retention_days` and idempotency keys older than 24 h,
    unless another process is sweeping (then `swept` is False and nothing is deleted)."""
    async with pool.acquire() as connection:
        if not await connection.fetchval("select pg_try_advisory_lock($1)", SWEEP_LOCK):
            log.info("retention sweep skipped: another process is sweeping")
            return SweepReport(swept=False)
        try:
            report = SweepReport()
            for table in AGED_TABLES:
                await _delete_older(connection, table, retention_days * 86400.0, batch_rows, report)
            await _delete_older(
                connection, "idempotency_keys", float(IDEMPOTENCY_KEEP_S), batch_rows, report
            )
            await _delete_older(
                connection, STATS_TABLE, retention_days * 86400.0, batch_rows, report,
                column=STATS_AGE_COLUMN,
            )  # fmt: skip
            # Recovery jobs (with their items, by cascade) go with the deliveries they took.
            await _delete_older(
                connection, "recoveries", retention_days * 86400.0, batch_rows, report
            )
        finally:
            await connection.execute("select pg_advisory_unlock($1)", SWEEP_LOCK)
    if any(map(sum, report.batches.values())):
        log.info("retention sweep deleted %s", {t: sum(b) for t, b in report.batches.items()})
    return report


async def _delete_older(
    connection: asyncpg.Connection,
    table: str,
    age_s: float,
    batch_rows: int,
    report: SweepReport,
    column: str = "created_at",
) -> None:
    statement = DELETE_BATCH.format(table=table, column=column)
    batches = report.batches.setdefault(table, [])
    while True:
        status = await connection.execute(statement, age_s, batch_rows)
        batches.append(int(status.split()[-1]))  # "DELETE n"
        if batches[-1] < batch_rows:
            return
