"""The index holds one tenant's ids apart from another's (issue 12, A3), takes a publisher id
reused after the dedupe window as a new event, and summarizes canceled deliveries (B12)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from pipeline.db import create_pool, migrate
from pipeline.indexer import Batch
from pipeline.topics import ATTEMPTS, DELIVERIES, EVENTS
from tests.integration.conftest import Services

TENANTS = ("idx_a", "idx_b")  # this file's own tenants, in the index only


@pytest.fixture
async def pool(services: Services) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(services.database_url)
    await migrate(pool)
    yield pool
    # Its rows are pending deliveries no worker will ever attempt: remove them, so the
    # end-of-session check for stuck deliveries does not find them.
    async with pool.acquire() as connection:
        for table in ("delivery_attempts", "deliveries", "events"):
            await connection.execute(
                f"delete from {table} where tenant = any($1::text[])",  # noqa: S608 - constant
                list(TENANTS),
            )
    await pool.close()


async def _index(pool: asyncpg.Pool, *records: tuple[str, dict[str, Any]]) -> None:
    batch = Batch()
    for topic, record in records:
        batch.add(topic, orjson.dumps(record))
    async with pool.acquire() as connection:
        await batch.write(connection)


def _event(tenant: str, event_id: str, created_at: str, **data: Any) -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": "idx.made", "data": data,
            "created_at": created_at, "tenant": tenant}  # fmt: skip


def _delivery(tenant: str, delivery_id: str, event: dict[str, Any]) -> dict[str, Any]:
    return {"id": delivery_id, "event": event, "tenant": tenant, "destination_id": "evtd_same",
            "destination_generation": f"chg_{tenant}", "attempt": 0, "due_at": None,
            "routed_at": event["created_at"]}  # fmt: skip


async def test_one_event_id_in_two_tenants_is_two_events_with_two_deliveries(
    pool: asyncpg.Pool,
) -> None:
    event_id, delivery_id = f"evt_idx_{time.time_ns()}", f"evdl_idx_{time.time_ns()}"
    at = "2026-01-01T00:00:00.000Z"
    a, b = _event("idx_a", event_id, at, who="a"), _event("idx_b", event_id, at, who="b")
    # Even one delivery id in both (a derivation without the tenant) stays two rows.
    await _index(
        pool,
        (EVENTS, a),
        (EVENTS, b),
        (DELIVERIES, _delivery("idx_a", delivery_id, a)),
        (DELIVERIES, _delivery("idx_b", delivery_id, b)),
    )
    async with pool.acquire() as connection:
        events = await connection.fetch(
            "select tenant, data from events where id = $1 order by tenant", event_id
        )
        deliveries = await connection.fetch(
            "select tenant, destination_generation from deliveries where id = $1 order by 1",
            delivery_id,
        )
    assert [(r["tenant"], orjson.loads(r["data"])) for r in events] == [
        ("idx_a", {"who": "a"}),
        ("idx_b", {"who": "b"}),
    ]
    assert [tuple(r) for r in deliveries] == [("idx_a", "chg_idx_a"), ("idx_b", "chg_idx_b")]


async def test_a_publisher_id_reused_after_the_window_replaces_the_old_event(
    pool: asyncpg.Pool,
) -> None:
    event_id = f"evt_reuse_{time.time_ns()}"
    first = _event("idx_a", event_id, "2026-01-01T00:00:00.000Z", n=1)
    within = _event("idx_a", event_id, "2026-01-01T23:00:00.000Z", n=2)
    after = _event("idx_a", event_id, "2026-01-02T00:00:00.000Z", n=3)

    async def data() -> Any:
        async with pool.acquire() as connection:
            raw = await connection.fetchval(
                "select data from events where tenant = 'idx_a' and id = $1", event_id
            )
        return orjson.loads(raw)

    await _index(pool, (EVENTS, first))
    await _index(pool, (EVENTS, within))  # a duplicate: the router drops it, the row stays
    assert await data() == {"n": 1}
    await _index(pool, (EVENTS, after))  # 24 h on: a new event
    assert await data() == {"n": 3}


async def test_a_canceled_delivery_is_final_and_counts_no_attempt(pool: asyncpg.Pool) -> None:
    delivery_id = f"evdl_cancel_{time.time_ns()}"
    event = _event("idx_a", f"evt_cancel_{time.time_ns()}", "2026-01-01T00:00:00.000Z")
    delivery = _delivery("idx_a", delivery_id, event)

    def attempt(n: int, outcome: str, at: str, **more: Any) -> dict[str, Any]:
        return {"id": f"evat_{delivery_id}_{n}", "delivery_id": delivery_id,
                "event_id": event["id"], "event_type": "idx.made", "tenant": "idx_a",
                "destination_id": "evtd_same", "destination_generation": "chg_idx_a",
                "attempt": n, "outcome": outcome, "response_status": None, "latency_ms": 0.0,
                "error": "x", "response_body": None, "created_at": at, **more}  # fmt: skip

    retry = {"next": {"tier": 1, "due_ms": 1_767_225_601_000}}
    await _index(
        pool,
        (DELIVERIES, delivery),
        (ATTEMPTS, attempt(0, "failed", "2026-01-01T00:00:00.500Z", **retry)),
        (ATTEMPTS, attempt(1, "canceled", "2026-01-01T00:00:01.000Z")),
    )
    async with pool.acquire() as connection:
        row = await connection.fetchrow(
            "select status, attempts, next_attempt_at from deliveries where id = $1",
            delivery_id,
        )
    assert tuple(row) == ("canceled", 1, None)
