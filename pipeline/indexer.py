"""The indexer: events, deliveries and attempts from Kafka into PostgreSQL, in batches.

A plain aiokafka consumer group. Each batch is written in one transaction and only then
are its offsets committed; every write is idempotent (keyed by the record's id), so a
replayed topic or a redelivered batch never duplicates a row. A batch is one statement per
table, and a delivery's summary is computed here from the batch's new attempts: one row
change per delivery per batch, never a recount of its attempts. The statistics' rollup rows
(pipeline/stats.py) are kept the same way: from what the batch's statements inserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, IllegalStateError

from pipeline import delivery_record, metrics, stats
from pipeline.db import DATABASE_ERRORS
from pipeline.retention import sweep
from pipeline.settings import Settings
from pipeline.supervision import SupervisedLoop
from pipeline.topics import ATTEMPTS, DELIVERIES, EVENTS

log = logging.getLogger(__name__)

RETENTION_SWEEP_S = 3600.0
# Once records come, the indexer gathers more for up to this long (or MAX_BATCH_RECORDS)
# and writes them in one transaction: at a few hundred records a second a transaction and
# an offset commit per fetch cost more CPU than the rows. The index is not on the delivery
# path; it lags by this much more at low rates.
GATHER_S = 0.1
# How long the loop waits for a first record: a record ends the wait at once, so this only
# paces an idle indexer's turns.
POLL_TIMEOUT_MS = 1000
MAX_BATCH_RECORDS = 2000
# Held by each batch's transaction: one indexer writes at a time, so the `indexed_seq` a row
# gets is also the order rows become visible (a poller never passes one committed later).
INDEX_ORDER_LOCK = 7_274_001_202

# A publisher-chosen id published again within 24 h is a duplicate (the router drops it,
# and the row keeps the first); reused after the window it is a new event, which replaces
# the old row (its deliveries have ids of their own, see pipeline/agents/router.py).
# Each table is written with one statement per batch, its rows passed as one array of a
# row type of migration 014 (events: 017's, with the ordering key; asyncpg encodes that faster
# than an array per column).
INSERT_EVENTS = """
insert into events (tenant, id, type, data, created_at, ordering_key)
select tenant, id, type, data::jsonb, created_at, ordering_key
from unnest($1::index_event_keyed[])
on conflict (tenant, id) do update
    set type = excluded.type, data = excluded.data, created_at = excluded.created_at,
        ordering_key = excluded.ordering_key
    where excluded.created_at >= events.created_at + interval '24 hours'
returning tenant, type, created_at"""
# Only the attempts new to the index come back: they alone count in their delivery's summary.
INSERT_ATTEMPTS = """
insert into delivery_attempts (id, delivery_id, tenant, event_id, destination_id, attempt,
    outcome, response_status, latency_ms, error, response_body, next_attempt_at, dead_letter,
    created_at)
select * from unnest($1::index_attempt[])
on conflict do nothing
returning id"""
# (The events the statement inserted or replaced come back: they count in the statistics.)
# A delivery's summary follows from its attempts, whatever order they were indexed in: the
# batch brings the count of its new attempts and the latest of them, and the row takes that
# latest only if it is later, by (created_at, id) as the attempt list orders them, than the
# one it has. So an attempt indexed late never moves a summary back and a replayed one (not
# new) changes nothing. A `canceled` attempt (its destination was deleted or disabled) is
# final and no attempt made. A delivery record for a row already there changes nothing.
_LATER = """(excluded.last_attempt_at is not null and (d.last_attempt_at is null
    or (excluded.last_attempt_at, excluded.last_attempt_id)
        > (d.last_attempt_at, coalesce(d.last_attempt_id, '') collate "C")))"""
# Of the rows it writes, those it inserted come back (xmax is 0 on a row version that no
# transaction updated or locked): each is a new delivery in the statistics.
UPSERT_DELIVERIES = f"""
with written as (
insert into deliveries as d (id, tenant, event_id, event_type, destination_id, created_at,
    destination_generation, status, attempts, last_attempt_at, last_attempt_id,
    next_attempt_at, updated_at)
select id, tenant, event_id, event_type, destination_id, created_at, generation, status,
    attempts, last_at, last_id, next_at,
    case when last_at is null then created_at else now() end
from unnest($1::index_delivery[])
on conflict (tenant, id) do update set
    attempts = d.attempts + excluded.attempts,
    status = case when {_LATER} then excluded.status else d.status end,
    last_attempt_at = case when {_LATER} then excluded.last_attempt_at else d.last_attempt_at end,
    last_attempt_id = case when {_LATER} then excluded.last_attempt_id else d.last_attempt_id end,
    next_attempt_at = case when {_LATER} then excluded.next_attempt_at else d.next_attempt_at end,
    updated_at = now()
where excluded.attempts > 0 or {_LATER}
returning tenant, destination_id, destination_generation, event_type, created_at,
    xmax = 0 as inserted)
select tenant, destination_id, destination_generation, event_type, created_at
from written where inserted"""  # noqa: S608 - a constant condition, no input
# The batch's rollup rows (pipeline/stats.py), each key once, added to the rows there.
_STATS_COUNTERS = ", ".join(f"{name} = s.{name} + excluded.{name}" for name in stats.COUNTERS)
UPSERT_STATS = f"""
insert into delivery_stats as s (tenant, span_s, bucket_at, destination_id,
    destination_generation, event_type, {", ".join(stats.COUNTERS)}, latency_histogram)
select * from unnest($1::index_stats[])
on conflict (tenant, span_s, bucket_at, destination_id, destination_generation, event_type)
do update set {_STATS_COUNTERS},
    latency_histogram = herald_add_histograms(s.latency_histogram, excluded.latency_histogram)"""  # noqa: S608 - constant column names


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _ms(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, UTC) if value else None


# PostgreSQL's text and jsonb cannot hold U+0000: one such record (event data from before the
# API refused it, a receiver's response body) would fail its batch forever and stall the
# index. It is stored as U+FFFD instead.
def _text(value: str | None) -> str | None:
    return value.replace("\x00", "\ufffd") if value else value


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


def _json_text(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return orjson.dumps(_without_nul(value)).decode() if "\\u0000" in text else text


DeliveryKey = tuple[str, str]  # (tenant, delivery id)
Row = tuple[Any, ...]


def _delivery_row(value: bytes) -> Row:
    """The row a `deliveries` record makes: (id, tenant, event id, event type, destination
    id, created at, destination generation). Batch.add calls it; it is the only reader of
    that record's format here, and reads only the record's head (pipeline.delivery_record)."""
    record = delivery_record.head(value)
    event = record["event"]
    return (
        record["id"],
        record["tenant"],
        event["id"],
        event["type"],
        record["destination_id"],
        _ts(record.get("routed_at") or event["created_at"]),
        record.get("destination_generation"),
    )


def _attempt_rows(record: dict[str, Any]) -> tuple[Row, Row]:
    """The delivery row an attempt record makes (for a delivery whose own record the index
    has not seen), and its attempt row."""
    following = record.get("next") or {}
    at = _ts(record["created_at"])
    delivery = (
        record["delivery_id"],
        record["tenant"],
        record["event_id"],
        record["event_type"],
        record["destination_id"],
        at,
        record.get("destination_generation"),
    )
    attempt = (
        record["id"],
        record["delivery_id"],
        record["tenant"],
        record["event_id"],
        record["destination_id"],
        record["attempt"],
        record["outcome"],
        record.get("response_status"),
        record.get("latency_ms"),
        _text(record.get("error")),
        _text(record.get("response_body")),
        _ms(following.get("due_ms")),
        following.get("dead_letter"),
        at,
    )
    return delivery, attempt


def _summary(latest: Row | None) -> tuple[str, datetime | None, str | None, datetime | None]:
    """(status, last attempt at, last attempt id, next attempt at) of a delivery whose
    latest attempt is `latest` (an attempt row; None: no attempt yet)."""
    if latest is None:
        return "pending", None, None, None
    outcome, dead_letter = latest[6], latest[12]
    if outcome in ("success", "canceled"):
        return ("succeeded" if outcome == "success" else "canceled"), latest[13], latest[0], None
    return ("failed" if dead_letter is not None else "retrying"), latest[13], latest[0], latest[11]


def _rounds(rows: list[Row], width: int) -> list[list[Row]]:
    """`rows` split in order into as few lists as may each be one upsert: one statement's
    ON CONFLICT DO UPDATE can change a row only once, so the second row of one key goes to
    the second list (keys are the first `width` columns)."""
    if len({row[:width] for row in rows}) == len(rows):  # no key twice: the usual batch
        return [rows] if rows else []
    rounds: list[list[Row]] = []
    keys: list[set[Row]] = []
    for row in rows:
        key = row[:width]
        for taken, into in zip(keys, rounds, strict=True):
            if key not in taken:
                taken.add(key)
                into.append(row)
                break
        else:
            keys.append({key})
            rounds.append([row])
    return rounds


class Batch:
    """Rows of one fetched batch, grouped by table."""

    def __init__(self) -> None:
        self.events: list[Row] = []
        # One row per delivery: from its own record if the batch has it, else from its
        # first attempt's.
        self.deliveries: dict[DeliveryKey, Row] = {}
        self._recorded: set[DeliveryKey] = set()
        self.attempts: list[Row] = []

    def add(self, topic: str, value: bytes) -> None:
        """Parse one record into the rows it makes."""
        if topic == DELIVERIES:
            row = _delivery_row(value)
            key = (row[1], row[0])
            if key not in self._recorded:
                self._recorded.add(key)
                self.deliveries[key] = row
            return
        record = orjson.loads(value)
        if topic == EVENTS:
            if record.get("replay_of") is None and record.get("destination_id") is None:
                self.events.append(
                    (
                        record["tenant"],
                        record["id"],
                        record["type"],
                        _json_text(record["data"]),
                        _ts(record["created_at"]),
                        record.get("ordering_key"),
                    )
                )
        elif topic == ATTEMPTS:
            delivery, attempt = _attempt_rows(record)
            self.deliveries.setdefault((delivery[1], delivery[0]), delivery)
            self.attempts.append(attempt)

    async def write(self, connection: asyncpg.Connection) -> None:
        """Write every row in one transaction: one statement per table (a publisher id
        reused within the batch adds one), the last one adding what the others inserted to
        the statistics' rollup rows."""
        async with connection.transaction():
            await connection.execute("select pg_advisory_xact_lock($1)", INDEX_ORDER_LOCK)
            rollup = stats.Rollup()
            for rows in _rounds(self.events, 2):
                for event in await connection.fetch(INSERT_EVENTS, rows):
                    rollup.event(*event)
            new: list[Row] = []
            if self.attempts:
                inserted = await connection.fetch(INSERT_ATTEMPTS, self.attempts)
                new = self._inserted({r[0] for r in inserted})
            if self.deliveries:
                for delivery in await connection.fetch(UPSERT_DELIVERIES, self._summarized(new)):
                    rollup.delivery(*delivery)
            self._count_attempts(rollup, new)
            if rows := rollup.rows():
                await connection.execute(UPSERT_STATS, rows)

    def _count_attempts(self, rollup: stats.Rollup, new_attempts: list[Row]) -> None:
        """Add the new attempts to the rollup, each under its delivery's destination
        generation and event type (its delivery row in this batch holds them)."""
        for attempt in new_attempts:
            delivery = self.deliveries[(attempt[2], attempt[1])]
            group = (attempt[2], attempt[4], delivery[6] or "", delivery[3])
            rollup.attempt(group, attempt[6], attempt[7], attempt[8], attempt[12], attempt[13])

    def _inserted(self, ids: set[str]) -> list[Row]:
        """The attempt rows with these ids (of an id the batch holds twice, the first: the
        one inserted)."""
        rows = []
        for attempt in self.attempts:
            if attempt[0] in ids:
                ids.discard(attempt[0])
                rows.append(attempt)
        return rows

    def _summarized(self, new_attempts: list[Row]) -> list[Row]:
        """Each delivery row with its summary of the batch's new attempts: how many count
        (a canceled one does not) and the latest, by (created_at, id)."""
        counts: dict[DeliveryKey, int] = {}
        latest: dict[DeliveryKey, Row] = {}
        for attempt in new_attempts:
            key = (attempt[2], attempt[1])
            counts[key] = counts.get(key, 0) + (attempt[6] != "canceled")
            have = latest.get(key)
            if have is None or (attempt[13], attempt[0]) > (have[13], have[0]):
                latest[key] = attempt
        unattempted = (*_summary(None)[:1], 0, *_summary(None)[1:])
        rows = []
        for key, row in self.deliveries.items():
            last = latest.get(key)
            if last is None:
                rows.append(row + unattempted)
            else:
                status, last_at, last_id, next_at = _summary(last)
                rows.append((*row, status, counts[key], last_at, last_id, next_at))
        return rows


def _add(batch: Batch, topic: str, value: bytes, offset: int) -> None:
    """Add one record's rows; a record that does not parse is logged, counted and skipped
    (retrying cannot change it, and it must not stall the index)."""
    try:
        batch.add(topic, value)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        metrics.INDEX_RECORDS_SKIPPED.labels(topic=topic).inc()
        where = {"topic": topic, "offset": offset}
        log.error("index record skipped: %s", type(exc).__name__, extra=where)


class Indexer:
    """Consumes events, deliveries and attempts; writes them to PostgreSQL."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self._settings = settings
        self._pool = pool
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.loop: SupervisedLoop | None = None

    async def start(self) -> None:
        """Join the indexer group and start consuming and sweeping. A consume loop that
        fails is restarted from the committed offsets, with backoff, for as long as it
        takes: delivery must not stop because the index cannot be written."""
        self._consumer = AIOKafkaConsumer(
            EVENTS, DELIVERIES, ATTEMPTS,
            bootstrap_servers=self._settings.kafka_bootstrap,
            group_id=f"{self._settings.app_id}-indexer",
            client_id=f"{self._settings.app_id}-indexer",
            enable_auto_commit=False,
            session_timeout_ms=int(self._settings.consumer_session_timeout_s * 1000),
            auto_offset_reset="earliest",
            # Not on the delivery path: the broker may hold a fetch until 64 KiB or 500 ms
            # have gathered, so at low rates the indexer fetches twice a second, not once
            # per record (each fetch costs a request over every partition, and each batch
            # a database round trip).
            max_poll_records=2000, fetch_max_wait_ms=500, fetch_min_bytes=64 * 1024,
        )  # fmt: skip
        await self._consumer.start()
        self.loop = SupervisedLoop("index", self._consume, max_restarts=None, reset=self._rewind)
        self.loop.start()
        self._tasks = [asyncio.create_task(self._sweep(), name="indexer-retention")]

    async def stop(self) -> None:
        """Stop consuming; offsets of written batches are already committed."""
        if self.loop is not None:
            await self.loop.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _rewind(self) -> None:
        """Before a restart: back to the committed offsets, so nothing the failed loop had
        fetched but not written is passed over."""
        assert self._consumer is not None
        for tp in self._consumer.assignment():
            committed = await self._consumer.committed(tp)
            if committed is None:  # never committed: from the beginning, as at start-up
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)

    async def _consume(self) -> None:
        assert self._consumer is not None and self.loop is not None
        while True:
            self.loop.beat()
            batch = await self._gather()
            if batch is None:
                continue
            await self._write_until_done(batch)
            try:
                await self._consumer.commit()
            except (CommitFailedError, IllegalStateError) as exc:
                # A rebalance moved partitions meanwhile; their new owner writes the batch
                # again from the last commit (every write is idempotent).
                log.warning("index commit refused after a rebalance (%s)", type(exc).__name__)

    async def _gather(self) -> Batch | None:
        """The records of the next batch: whatever comes within GATHER_S of the first."""
        assert self._consumer is not None
        batches = await self._consumer.getmany(
            timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_BATCH_RECORDS
        )
        if not batches:
            return None
        batch, count = Batch(), 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_S
        while batches:
            for tp, records in batches.items():
                count += len(records)
                for record in records:
                    if record.value is not None:
                        _add(batch, tp.topic, record.value, record.offset)
            left_s = deadline - loop.time()
            if count >= MAX_BATCH_RECORDS or left_s <= 0:
                break
            batches = await self._consumer.getmany(
                timeout_ms=int(left_s * 1000) + 1, max_records=MAX_BATCH_RECORDS - count
            )
        return batch

    async def _write_until_done(self, batch: Batch) -> None:
        """Retry a batch until the database takes it: offsets must not pass unwritten rows."""
        delay_s = 0.5
        while True:
            try:
                async with self._pool.acquire() as connection:
                    await batch.write(connection)
                return
            except DATABASE_ERRORS as exc:
                log.warning("index write failed (%s); retrying in %.1fs", exc, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 30.0)

    async def _sweep(self) -> None:
        """Drop what is older than the retention, and expired idempotency keys."""
        while True:
            try:
                await sweep(self._pool, self._settings.index_retention_days)
            except DATABASE_ERRORS as exc:
                log.warning("retention sweep failed: %s", exc)
            await asyncio.sleep(RETENTION_SWEEP_S)
