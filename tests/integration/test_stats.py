"""Delivery statistics end to end (issue 18, part 3): real deliveries to a real receiver
that succeeds for some events and fails for others, then GET /v2/stats and
…/{id}/stats once the index has them: the counts, the status classes, the success rates,
percentiles within the precision pipeline/stats.py states, bucket bounds and the 400s.

Everything runs in a tenant of its own (made with the platform key), so no other test's
deliveries count in its tenant-wide numbers.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web

from pipeline.db import MIGRATIONS
from pipeline.stats import ALL_DESTINATIONS, latency_slot, slot_bounds_ms
from tests.integration.api_client import Api
from tests.integration.conftest import PLATFORM_KEY, Services, Stack
from tests.integration.test_tenants import client, new_tenant
from tests.support import Receiver, eventually

# What the receiver answers, by the event's data: `ok` 200 after `delay_ms`; `flaky` 503 on
# the first request of an event, then 200; `bad` always 422 (retried, then dead-lettered).
DELAYS_MS = (0, 5, 20, 40, 80, 150)
FLAKY = 2
# The test stack retries 3 times (HERALD_MAX_RETRIES): a delivery that always fails makes 4
# attempts before it is dead-lettered.
ATTEMPTS_TO_FAIL = 4


@dataclass
class AnsweringReceiver(Receiver):
    """A Receiver that answers by the event's `data.answer` (a real server: the sleep is
    the receiver's latency, not synchronization)."""

    def __post_init__(self) -> None:
        self.seen: set[str] = set()

    async def _handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        answer, first = body["data"]["answer"], body["id"] not in self.seen
        self.seen.add(body["id"])
        if answer == "ok":
            await asyncio.sleep(body["data"]["delay_ms"] / 1000)
            return web.Response(status=200, text="ok")
        if answer == "flaky" and not first:
            return web.Response(status=200, text="ok")
        return web.Response(status=503 if answer == "flaky" else 422, text="nope")


@pytest.fixture
async def answering() -> AsyncIterator[AnsweringReceiver]:
    server = await AnsweringReceiver().start()
    yield server
    await server.stop()


@pytest.fixture
async def stats_tenant(platform: Api) -> dict[str, Any]:
    return dict(await new_tenant(platform))


@pytest.fixture
async def tenant_api(stack: Stack, stats_tenant: dict[str, Any]) -> AsyncIterator[Api]:
    async with client(stack.api_url, PLATFORM_KEY, stats_tenant["id"]) as api:
        yield api


async def _stats(api: Api, path: str, **query: str) -> dict[str, Any]:
    status, body = await api.call("GET", path, params=query)
    assert status == 200, body
    return dict(body)


def _nearest_rank(values: list[float], quantile: float) -> float:
    return sorted(values)[max(0, math.ceil(quantile * len(values)) - 1)]


def _within_precision(estimate: float, true_ms: float) -> bool:
    """The stated precision: the estimate lies in the slot of the exact percentile (less
    than 26 % of it away, or 1 ms below 1 ms)."""
    low, high = slot_bounds_ms(latency_slot(true_ms))
    return low - 0.001 <= estimate <= high + 0.001


async def _attempt_latencies(api: Api, destination_id: str) -> list[float]:
    """Every attempt's latency of the destination, from the delivery log."""
    _, page = await api.call(
        "GET", f"/v2/event-destinations/{destination_id}/event-deliveries", params={"limit": "100"}
    )
    latencies = []
    for delivery in page["data"]:
        _, full = await api.call("GET", f"/v2/event-deliveries/{delivery['id']}")
        latencies += [a["latency_ms"] for a in full["attempts"]]
    return latencies


async def test_statistics_count_real_deliveries(
    tenant_api: Api,
    answering: AnsweringReceiver,
    services: Services,
    stats_tenant: dict[str, Any],
) -> None:
    api = tenant_api
    before = datetime.now(UTC)
    main = await api.create_webhook(f"{answering.url}/main", ["stats.*"])
    # Nothing listens on the discard port: every attempt is a network error.
    lost = await api.create_webhook("http://127.0.0.1:9/lost", ["lost.*"])
    for delay_ms in DELAYS_MS:
        await api.publish("stats.ok", {"answer": "ok", "delay_ms": delay_ms})
    for _ in range(FLAKY):
        await api.publish("stats.flaky", {"answer": "flaky"})
    await api.publish("stats.bad", {"answer": "bad"})
    await api.publish("lost.one", {"answer": "ok", "delay_ms": 0})
    main_path = f"/v2/event-destinations/{main['id']}/stats"
    ok_count = len(DELAYS_MS)

    async def finished() -> dict[str, Any] | None:
        body = await _stats(api, "/v2/stats", bucket="minute")
        deliveries = body["totals"]["deliveries"]
        return (
            body if deliveries["succeeded"] + deliveries["failed"] == ok_count + FLAKY + 2 else None
        )

    tenant = await eventually(finished, timeout_s=60, what="every delivery finished and indexed")
    totals = tenant["totals"]
    assert totals["events"] == ok_count + FLAKY + 2
    assert totals["deliveries"] == {
        "created": ok_count + FLAKY + 2, "succeeded": ok_count + FLAKY, "failed": 2,
        "canceled": 0, "success_rate": round((ok_count + FLAKY) / (ok_count + FLAKY + 2), 4),
    }  # fmt: skip
    attempts = ok_count + 2 * FLAKY + 2 * ATTEMPTS_TO_FAIL
    assert totals["attempts"] == {
        "total": attempts, "succeeded": ok_count + FLAKY, "failed": attempts - ok_count - FLAKY,
        "success_rate": round((ok_count + FLAKY) / attempts, 4),
        "status_classes": {"2xx": ok_count + FLAKY, "3xx": 0, "4xx": ATTEMPTS_TO_FAIL,
                           "5xx": FLAKY, "none": ATTEMPTS_TO_FAIL},
    }  # fmt: skip

    # Minute buckets: aligned, every minute of the hour before, and they add up to the totals.
    start, end = _time(tenant["from"]), _time(tenant["to"])
    assert start.second == end.second == 0 and end - start == timedelta(hours=1)
    assert len(tenant["buckets"]) == 60
    assert [_time(b["start"]) for b in tenant["buckets"]] == [
        start + timedelta(minutes=n) for n in range(60)
    ]
    busy = [b for b in tenant["buckets"] if b["attempts"]["total"]]
    assert sum(b["attempts"]["total"] for b in busy) == attempts
    assert sum(b["events"] for b in busy) == totals["events"]
    assert before.replace(second=0, microsecond=0) <= _time(busy[0]["start"])
    assert _time(busy[-1]["start"]) <= datetime.now(UTC)
    # The same rows summed by hour and by day.
    for bucket in ("hour", "day"):
        assert (await _stats(api, "/v2/stats", bucket=bucket))["totals"] == totals
    # A range that ends before anything happened counts nothing; `from` moves down to its
    # minute, `to` up to the next one.
    minute = before.replace(second=0, microsecond=0)
    early = await _stats(
        api, "/v2/stats", bucket="minute", to=_iso(minute - timedelta(seconds=43)),
        **{"from": _iso(minute - timedelta(minutes=30, seconds=43))},
    )  # fmt: skip
    assert early["totals"]["attempts"]["total"] == 0 and len(early["buckets"]) == 31
    assert (_time(early["from"]), _time(early["to"])) == (minute - timedelta(minutes=31), minute)

    # Grouped by destination: each destination's own numbers; `lost` only network errors.
    grouped = await _stats(api, "/v2/stats", group_by="destination")
    groups = {g["key"]: g["totals"] for g in grouped["groups"]}
    assert set(groups) == {main["id"], lost["id"]} and not grouped["more_groups"]
    assert groups[lost["id"]]["attempts"]["status_classes"]["none"] == ATTEMPTS_TO_FAIL
    assert groups[lost["id"]]["deliveries"]["failed"] == 1
    assert groups[main["id"]]["events"] == ok_count + FLAKY + 1  # the events routed to it
    # The tenant-wide numbers come from rows that sum all destinations (migration 018), the
    # grouped ones from each destination's: both count the same deliveries and attempts.
    for part in ("deliveries", "attempts"):
        for name, value in totals[part].items():
            if name not in ("success_rate", "status_classes"):
                assert value == sum(g[part][name] for g in groups.values()), (part, name)
    assert grouped["totals"]["attempts"] == totals["attempts"]
    await _check_backfill(services, stats_tenant["id"])

    # One destination, by event type; its percentiles against its attempts' own latencies.
    mine = await _stats(api, main_path, group_by="event_type")
    assert mine["destination_id"] == main["id"]
    by_type = {g["key"]: g["totals"] for g in mine["groups"]}
    # The most attempts first, then the most deliveries.
    assert list(by_type) == ["stats.ok", "stats.flaky", "stats.bad"]
    assert by_type["stats.flaky"]["attempts"]["status_classes"]["5xx"] == FLAKY
    assert by_type["stats.bad"]["deliveries"]["success_rate"] == 0.0
    assert by_type["stats.ok"]["deliveries"]["success_rate"] == 1.0
    latencies = await _attempt_latencies(api, main["id"])
    assert len(latencies) == mine["totals"]["attempts"]["total"]
    for name, quantile in (("p50", 0.5), ("p95", 0.95)):
        estimate, exact = mine["totals"]["latency_ms"][name], _nearest_rank(latencies, quantile)
        assert _within_precision(estimate, exact), (name, estimate, exact)
    # The slowest answer was 150 ms: the p95 is the receiver's delay, not the clock's noise.
    assert mine["totals"]["latency_ms"]["p95"] >= 80


async def _check_backfill(services: Services, tenant: str) -> None:
    """Migration 018 sums the rows written before it into the all-destinations rows: run
    on the rows the indexer wrote (its own all-destinations rows deleted first, in a
    transaction rolled back after), it makes exactly the rows the indexer made."""
    columns = "span_s, bucket_at, event_type, events, deliveries, succeeded, failed, " \
        "canceled, attempts_succeeded, attempts_failed, status_2xx, status_3xx, status_4xx, " \
        "status_5xx, status_none, latency_histogram"  # fmt: skip
    rows = (
        f"select {columns} from delivery_stats where tenant = $1 "  # noqa: S608 - constants
        "and destination_id = $2 order by span_s, bucket_at, event_type"
    )
    connection = await asyncpg.connect(services.database_url)
    transaction = connection.transaction()
    await transaction.start()
    try:
        # The indexer waits (for other tests' rows) until the rollback.
        await connection.execute("lock table delivery_stats in exclusive mode")
        written = await connection.fetch(rows, tenant, ALL_DESTINATIONS)
        assert written, "no all-destinations rows"
        await connection.execute(
            "delete from delivery_stats where destination_id = $1", ALL_DESTINATIONS
        )
        [migration] = MIGRATIONS.glob("018_*.sql")
        await connection.execute(migration.read_text())
        assert await connection.fetch(rows, tenant, ALL_DESTINATIONS) == written
    finally:
        await transaction.rollback()
        await connection.close()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # seconds, no fraction


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"bucket": "week"}, "bucket"),
        ({"group_by": "tenant"}, "group_by"),
        ({"from": "last tuesday"}, "from"),
        ({"from": "2026-12-02T12:00:00Z", "to": "2026-12-01T12:00:00Z"}, "to"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "bucket": "day"}, "from"),
        ({"from": "2026-09-01T00:00:00Z", "to": "2026-11-30T00:00:00Z"}, "bucket"),
        ({"to": "0001-01-01T00:00:00Z"}, "to"),
    ],
)
async def test_bad_parameters_are_400s_naming_the_field(
    api: Api, query: dict[str, str], field: str
) -> None:
    status, body = await api.call("GET", "/v2/stats", params=query)
    assert status == 400, body
    assert list(body["errors"]) == [field], body
