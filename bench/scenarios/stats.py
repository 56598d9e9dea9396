"""Issue 18, scenario `stats`: the statistics query at 10 million attempts over 30 days.

Writes straight into the stack's PostgreSQL (no Kafka): 4 tenants with 5 destinations each
and 3 event types, one delivery every ~0.28 s over 30 days, one in ten failing once with a
503 before it succeeds (10 million attempts, 9.1 million deliveries), one day per statement
(generate_series into a temporary table, then `deliveries`, `delivery_attempts` and the
rollup rows the indexer would have written, per minute and per hour, summed by SQL with the
same latency slots as pipeline/stats.py). No `events` rows: the query reads none.

Migration 018 then sums the all-destinations rows, as in an upgrade (timed). Then times
what GET /v2/stats and GET …/{id}/stats run (`api.stats.read_stats`: the SQL and the body it
makes, and the body's JSON), repeated, for each of CASES: a tenant's and a destination's 30
days by hour, each alone and grouped by event type, and a tenant's grouped by destination;
p50/p95 of each, with EXPLAIN (ANALYZE, BUFFERS) of its SQL in the JSON. For scale, it
times once the same hourly attempt count from `delivery_attempts` itself. Goal: the 30-day
hourly query under 100 ms. The generated rows stay (the next run recreates the database):
run it last, or alone.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from api.stats import StatsRequest, read_stats, stats_sql
from bench.context import Bench, Outcome, Row
from bench.progress import progress
from bench.stack import cpu_seconds
from pipeline import stats
from pipeline.db import MIGRATIONS

TENANTS = 4
DESTINATIONS = 5  # per tenant
TYPES = 3
DAYS = 30
FAILING_ONE_IN = 10
RUNS = 30
CEILING_MS = 100.0
END = datetime(2026, 11, 30, tzinfo=UTC)

# Delivery n of a day: tenant n % 4, destination (n / 4) % 5, event type (n / 20) % 3; its
# latency is pseudo-random, mostly 5-60 ms with a long tail (to ~2 s).
CHUNK = """
create temp table chunk on commit drop as
select *, case when latency_ms < 1 then 0
    else least({last_slot}, floor({per_doubling} * ln(latency_ms) / ln(2))::int + 1) end as slot
from (select n, 'bench_stats_' || (n % {tenants}) as tenant,
    'evtd_stats_' || (n % {tenants}) || '_' || ((n / {tenants}) % {destinations}) as destination,
    'stats.t' || ((n / ({tenants} * {destinations})) % {types}) as event_type,
    $1::timestamptz + make_interval(secs => (n - $2) * $3::float8) as at,
    (5 + 55 * random() + case when random() < 0.05 then 2000 * random() ^ 2 else 0 end)
        as latency_ms,
    n % {failing} = 0 as failing
from generate_series($2::bigint, $2::bigint + $4::bigint - 1) as n) generated"""
DELIVERIES = """
insert into deliveries (id, tenant, event_id, event_type, destination_id, created_at,
    destination_generation, status, attempts, last_attempt_at, last_attempt_id, updated_at)
select 'evdl_' || n, tenant, 'evt_' || n, event_type, destination, at, 'chg_1', 'succeeded',
    case when failing then 2 else 1 end, at, 'evat_' || n || '_1', at
from chunk"""
ATTEMPTS = """
insert into delivery_attempts (id, delivery_id, tenant, event_id, destination_id, attempt,
    outcome, response_status, latency_ms, created_at)
select 'evat_' || n || '_0', 'evdl_' || n, tenant, 'evt_' || n, destination, 0, 'failed', 503,
    latency_ms, at
from chunk where failing
union all
select 'evat_' || n || '_1', 'evdl_' || n, tenant, 'evt_' || n, destination, 1, 'success', 200,
    latency_ms, at + case when failing then interval '1 second' else interval '0' end
from chunk"""
_HISTOGRAM = ", ".join(
    f"(count(*) filter (where slot = {slot}))::int" for slot in range(stats.LATENCY_SLOTS)
)
# The day's minute rows. A failing delivery's two attempts are a second apart: both are
# counted in its first attempt's minute (one in 60 would be in the next).
MINUTES = f"""
insert into delivery_stats (tenant, span_s, bucket_at, destination_id, destination_generation,
    event_type, deliveries, succeeded, attempts_succeeded, attempts_failed, status_2xx,
    status_5xx, latency_histogram)
select tenant, 60, date_trunc('minute', at), destination, 'chg_1', event_type,
    count(*) filter (where not failed), count(*) filter (where not failed),
    count(*) filter (where not failed), count(*) filter (where failed),
    count(*) filter (where not failed), count(*) filter (where failed), array[{_HISTOGRAM}]
from (select tenant, destination, event_type, at, false as failed, slot from chunk
      union all
      select tenant, destination, event_type, at, true, slot from chunk where failing) a
group by 1, 2, 3, 4, 5, 6"""  # noqa: S608 - constants only
# The hour rows, summed from the minute rows as pipeline.stats.Rollup.rows() does.
_COUNTERS = ", ".join(stats.COUNTERS)
HOURS = f"""
insert into delivery_stats (tenant, span_s, bucket_at, destination_id, destination_generation,
    event_type, {_COUNTERS}, latency_histogram)
select tenant, 3600, date_trunc('hour', bucket_at), destination_id, destination_generation,
    event_type, {", ".join(f"sum({name})" for name in stats.COUNTERS)},
    array[{", ".join(f"sum(latency_histogram[{n}])" for n in range(1, stats.LATENCY_SLOTS + 1))}]
from delivery_stats where span_s = 60 and tenant like 'bench_stats_%'
group by 1, 2, 3, 4, 5, 6"""  # noqa: S608 - constants only
RAW_HOURLY = """
select date_trunc('hour', created_at), count(*) from delivery_attempts
where tenant = $1 and created_at >= $2 and created_at < $3 group by 1"""


# What is timed: its figure's name, its row's label, the destination (id, generation) or
# None for the tenant's, group_by, and the ceiling (None: shown, no goal). Grouped by
# destination, a tenant's query sums every destination's rows and returns a series per
# destination (6 here): the largest body, shown for scale.
CASES: tuple[tuple[str, str, tuple[str, str] | None, str | None, float | None], ...] = (
    ("tenant_30_days_hourly", "tenant", None, None, CEILING_MS),
    ("tenant_30_days_hourly_by_event_type", "tenant by type", None, "event_type", CEILING_MS),
    ("destination_30_days_hourly", "destination", ("evtd_stats_0_0", "chg_1"), None, CEILING_MS),
    ("destination_30_days_hourly_by_event_type", "destination by type",
     ("evtd_stats_0_0", "chg_1"), "event_type", CEILING_MS),
    ("tenant_30_days_hourly_by_destination", "tenant by destination", None, "destination", None),
)  # fmt: skip


def _thirty_days(group_by: str | None) -> StatsRequest:
    """The request of `?from=<30 days before END>&to=<END>&bucket=hour[&group_by=…]`."""
    return StatsRequest(END - timedelta(days=DAYS), END, "hour", group_by)


# Loaded as pg_restore would: these tables' secondary indexes are dropped first and built
# again once every row is in (each row maintaining six indexes made loading 5x slower).
SECONDARY_INDEXES = """
select indexname, indexdef from pg_indexes
where tablename in ('deliveries', 'delivery_attempts') and indexname not like '%\\_pkey'"""


async def _generate(connection: asyncpg.Connection, attempts: int) -> dict[str, Any]:
    """The rows of DAYS days, one transaction per day; their counts and the time taken."""
    deliveries = round(attempts / (1 + 1 / FAILING_ONE_IN))
    per_day = deliveries // DAYS
    step_s = 86400 / per_day
    chunk = CHUNK.format(
        tenants=TENANTS, destinations=DESTINATIONS, types=TYPES, failing=FAILING_ONE_IN,
        last_slot=stats.LATENCY_SLOTS - 1, per_doubling=stats.SLOTS_PER_DOUBLING,
    )  # fmt: skip
    began = time.monotonic()
    start = END - timedelta(days=DAYS)
    indexes = await connection.fetch(SECONDARY_INDEXES)
    for index in indexes:
        await connection.execute(f'drop index "{index["indexname"]}"')
    with progress("stats rows (days)", DAYS) as bar:
        for day in range(DAYS):
            await _day(
                connection, chunk, start + timedelta(days=day), day * per_day, step_s, per_day
            )
            bar.update_to(day + 1)
    await connection.execute(HOURS)
    loaded_s = time.monotonic() - began
    # The all-destinations rows, summed by migration 018 as in an upgrade (pipeline/stats.py
    # writes them with the others): how long that migration takes at this size, too.
    backfill_began = time.monotonic()
    [migration] = MIGRATIONS.glob("018_*.sql")
    await connection.execute(migration.read_text())
    backfill_s = time.monotonic() - backfill_began
    await connection.execute("set maintenance_work_mem = '256MB'")
    for index in indexes:
        await connection.execute(index["indexdef"])
    await connection.execute("analyze deliveries, delivery_attempts, delivery_stats")
    counts = {
        table: await connection.fetchval(f"select count(*) from {table}")  # noqa: S608
        for table in ("deliveries", "delivery_attempts", "delivery_stats")
    }
    return {
        "rows": counts,
        "load_s": round(loaded_s, 1),
        "migration_018_s": round(backfill_s, 1),
        "with_indexes_built_s": round(time.monotonic() - began, 1),
    }


async def _day(
    connection: asyncpg.Connection,
    chunk: str,
    start: datetime,
    first: int,
    step_s: float,
    count: int,
) -> None:
    """One day's rows, in one transaction."""
    async with connection.transaction():
        await connection.execute("set local synchronous_commit = off")
        await connection.execute(chunk, start, first, step_s, count)
        await connection.execute(DELIVERIES)
        await connection.execute(ATTEMPTS)
        await connection.execute(MINUTES)


async def _timed(
    pool: asyncpg.Pool, destination: tuple[str, str] | None, query: StatsRequest
) -> dict[str, Any]:
    """RUNS runs of read_stats (SQL and body) and the body's JSON, after one warm-up: wall
    time, and the CPU of this process and of its PostgreSQL backend per run (CPU does not
    depend on how busy the machine is); EXPLAIN (ANALYZE, BUFFERS) of its SQL."""
    tenant = "bench_stats_0"
    backend = await pool.fetchval("select pg_backend_pid()")  # the pool's one connection
    await read_stats(pool, tenant, query, destination)
    times_ms = []
    cpu_before, backend_before = time.process_time(), cpu_seconds(backend)
    for _ in range(RUNS):
        began = time.perf_counter()
        body = await read_stats(pool, tenant, query, destination)
        orjson.dumps(body)  # as the API's json_response does
        times_ms.append((time.perf_counter() - began) * 1000)
    python_cpu_ms = (time.process_time() - cpu_before) * 1000 / RUNS
    backend_cpu_ms = (cpu_seconds(backend) - backend_before) * 1000 / RUNS
    params: list[Any] = [tenant, stats.HOUR_S, query.start, query.end, timedelta(hours=1)]
    if destination is not None:
        params += list(destination)
    plan = await pool.fetch(
        "explain (analyze, buffers) " + stats_sql(query, destination is not None), *params
    )
    return {
        "runs": RUNS,
        "p50_ms": round(statistics.median(times_ms), 1),
        "p95_ms": round(statistics.quantiles(times_ms, n=20)[18], 1),
        "python_cpu_ms_per_run": round(python_cpu_ms, 1),
        "postgres_backend_cpu_ms_per_run": round(backend_cpu_ms, 1),
        "buckets": len(body["buckets"]),
        "attempts_counted": body["totals"]["attempts"]["total"],
        "explain_analyze": [r[0] for r in plan],
    }


async def run(bench: Bench) -> Outcome:
    """Generate the rows, then time each of CASES."""
    attempts = bench.size(10_000_000, 10_000_000)
    outcome = Outcome("stats")
    outcome.settings = {"attempts": attempts, "tenants": TENANTS,
                        "destinations_per_tenant": DESTINATIONS, "event_types": TYPES,
                        "days": DAYS, "runs": RUNS}  # fmt: skip
    pool = await asyncpg.create_pool(bench.stack.database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as connection:
            outcome.figures["generated"] = await _generate(connection, attempts)
        timed = {
            name: await _timed(pool, destination, _thirty_days(group_by))
            for name, _, destination, group_by, _ in CASES
        }
        async with pool.acquire() as connection:
            began = time.perf_counter()
            await connection.fetch(RAW_HOURLY, "bench_stats_0", END - timedelta(days=DAYS), END)
            raw_ms = round((time.perf_counter() - began) * 1000, 1)
    finally:
        await pool.close()
    outcome.figures.update(
        load_average=[round(x, 2) for x in os.getloadavg()],
        **timed,
        raw_attempts_hourly_count_ms=raw_ms,
    )
    outcome.rows = [
        Row("stats", f"{label}, 30 d by hour, p95", timed[name]["p95_ms"], "ms", ceiling,
            f"p50 {timed[name]['p50_ms']} ms")
        for name, label, _, _, ceiling in CASES
    ]  # fmt: skip
    outcome.rows.append(
        Row("stats", "attempts per hour from delivery_attempts", raw_ms, "ms", None, "once")
    )
    return outcome
