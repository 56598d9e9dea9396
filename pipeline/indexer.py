"""The indexer: events, deliveries and attempts from Kafka into PostgreSQL, in batches.

A plain aiokafka consumer group. Each batch is written in one transaction and only then
are its offsets committed; every write is idempotent (keyed by the record's id), so a
replayed topic or a redelivered batch never duplicates a row.
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

from pipeline import delivery_record, metrics
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
MAX_BATCH_RECORDS = 2000
# Held by each batch's transaction: one indexer writes at a time, so the `indexed_seq` a row
# gets is also the order rows become visible (a poller never passes one committed later).
INDEX_ORDER_LOCK = 7_274_001_202

# A publisher-chosen id published again within 24 h is a duplicate (the router drops it,
# and the row keeps the first); reused after the window it is a new event, which replaces
# the old row (its deliveries have ids of their own, see pipeline/agents/router.py).
INSERT_EVENT = """
insert into events (tenant, id, type, data, created_at) values ($1, $2, $3, $4, $5)
on conflict (tenant, id) do update
    set type = excluded.type, data = excluded.data, created_at = excluded.created_at
    where excluded.created_at >= events.created_at + interval '24 hours'"""
INSERT_DELIVERY = """
insert into deliveries (id, tenant, event_id, event_type, destination_id, status, created_at,
                        updated_at, destination_generation)
values ($1, $2, $3, $4, $5, 'pending', $6, $6, $7) on conflict do nothing"""
INSERT_ATTEMPT = """
insert into delivery_attempts (id, delivery_id, tenant, event_id, destination_id, attempt,
    outcome, response_status, latency_ms, error, response_body, next_attempt_at, dead_letter,
    created_at)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) on conflict do nothing"""
# A delivery's summary follows from its attempts, whatever order they were indexed in. A
# `canceled` one (its destination was deleted or disabled) is final and no attempt made.
SUMMARIZE = """
with latest as (
    select distinct on (delivery_id) delivery_id, outcome, dead_letter, next_attempt_at,
           created_at
    from delivery_attempts where delivery_id = any($1::text[])
    order by delivery_id, created_at desc, id desc
), counts as (
    select delivery_id, count(*) filter (where outcome <> 'canceled') as n
    from delivery_attempts
    where delivery_id = any($1::text[]) group by delivery_id
)
update deliveries d set
    attempts = c.n,
    status = case when l.outcome = 'success' then 'succeeded'
                  when l.outcome = 'canceled' then 'canceled'
                  when l.dead_letter is not null then 'failed' else 'retrying' end,
    last_attempt_at = l.created_at,
    next_attempt_at = case when l.outcome in ('success', 'canceled') then null
                           else l.next_attempt_at end,
    updated_at = now()
from latest l join counts c using (delivery_id)
where d.id = l.delivery_id"""


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


def _parse(topic: str, value: bytes) -> dict[str, Any]:
    """One record's fields; of a delivery record only its head (its body is not parsed)."""
    if topic == DELIVERIES:
        return delivery_record.head(value)
    record: dict[str, Any] = orjson.loads(value)
    return record


class Batch:
    """Rows of one fetched batch, grouped by table."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.deliveries: list[tuple[Any, ...]] = []
        self.attempts: list[tuple[Any, ...]] = []

    def add(self, topic: str, value: bytes) -> None:
        """Parse one record into the rows it makes."""
        record = _parse(topic, value)
        if topic == EVENTS:
            if record.get("replay_of") is None and record.get("destination_id") is None:
                self.events.append(
                    (
                        record["tenant"],
                        record["id"],
                        record["type"],
                        _json_text(record["data"]),
                        _ts(record["created_at"]),
                    )
                )
        elif topic == DELIVERIES:
            event = record["event"]
            created = _ts(record.get("routed_at") or event["created_at"])
            self.deliveries.append(
                (
                    record["id"],
                    record["tenant"],
                    event["id"],
                    event["type"],
                    record["destination_id"],
                    created,
                    record.get("destination_generation"),
                )
            )
        elif topic == ATTEMPTS:
            following = record.get("next") or {}
            at = _ts(record["created_at"])
            self.deliveries.append(
                (
                    record["delivery_id"],
                    record["tenant"],
                    record["event_id"],
                    record["event_type"],
                    record["destination_id"],
                    at,
                    record.get("destination_generation"),
                )
            )
            self.attempts.append(
                (
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
            )

    async def write(self, connection: asyncpg.Connection) -> None:
        """Write every row in one transaction."""
        async with connection.transaction():
            await connection.execute("select pg_advisory_xact_lock($1)", INDEX_ORDER_LOCK)
            if self.events:
                await connection.executemany(INSERT_EVENT, self.events)
            if self.deliveries:
                await connection.executemany(INSERT_DELIVERY, self.deliveries)
            if self.attempts:
                await connection.executemany(INSERT_ATTEMPT, self.attempts)
                await connection.execute(SUMMARIZE, sorted({a[1] for a in self.attempts}))


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
            # Not on the delivery path: the broker may hold a fetch until 64 KiB or 100 ms
            # have gathered, so at low rates the indexer fetches ten times a second, not
            # once per record (each fetch costs a request over every partition).
            max_poll_records=2000, fetch_max_wait_ms=100, fetch_min_bytes=64 * 1024,
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
        batches = await self._consumer.getmany(timeout_ms=200, max_records=MAX_BATCH_RECORDS)
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
