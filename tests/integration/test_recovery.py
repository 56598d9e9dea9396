"""Recovering after an outage (issue 16, part 3) against the real stack: a destination
dead-letters events while its receiver fails; once it is fixed, a recovery over a window
delivers exactly the failed ones in it, in publish order, each once, through the
destination's rate limit. The test stack retries 3 times from 0.2 s and disables a
destination after 2 dead letters in a row, so the failing events are published one at a
time with a delivered one between them."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from api.recovery import PAGE_ITEMS, TAKE_ITEMS
from pipeline import ids
from pipeline.db import create_pool
from tests.integration.api_client import Api
from tests.integration.conftest import (
    API_PORT,
    DEV_KEY,
    ROOT,
    TEST_DATA,
    Services,
    _wait_ready,
    herald_env,
)
from tests.support import Receiver, eventually

DESTINATIONS = "/v2/event-destinations"


def _event_type() -> str:
    return f"recovery_check.{ids.new_id('t').lower()}"


async def _delivery(api: Api, destination_id: str, event_id: str, status: str) -> dict[str, Any]:
    """The destination's delivery of the event once it has `status` in the index."""

    async def found() -> dict[str, Any] | None:
        _, page = await api.call(
            "GET", f"{DESTINATIONS}/{destination_id}/event-deliveries?status={status}&limit=100"
        )
        return next((d for d in page["data"] if d["event_id"] == event_id), None)

    found_delivery: dict[str, Any] = await eventually(
        found, timeout_s=30, what=f"the delivery of {event_id} {status}"
    )
    return found_delivery


async def _publish_until(
    api: Api, receiver: Receiver, destination_id: str, event_type: str, status: str, n: int
) -> dict[str, Any]:
    """Publish one event while the receiver answers 500 (`failed`) or 200 (`succeeded`);
    its delivery once it has that status."""
    receiver.status = 500 if status == "failed" else 200
    event_id = await api.publish(event_type, {"n": n})
    return await _delivery(api, destination_id, event_id, status)


async def _finished(
    api: Api, destination_id: str, recovery_id: str, timeout_s: float = 30
) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        status, job = await api.call(
            "GET", f"{DESTINATIONS}/{destination_id}/recoveries/{recovery_id}"
        )
        assert status == 200, job
        return job if job["status"] != "running" else None

    job: dict[str, Any] = await eventually(done, timeout_s=timeout_s, what="the recovery finished")
    return job


async def _delivered_all(api: Api, destination_id: str, recovery_id: str, count: int) -> None:
    async def delivered() -> bool:
        _, job = await api.call("GET", f"{DESTINATIONS}/{destination_id}/recoveries/{recovery_id}")
        return bool(job["delivered"] == count)

    await eventually(delivered, timeout_s=30, what=f"{count} recovered deliveries indexed")


async def test_a_recovery_delivers_the_window_s_failures_once_each_in_publish_order(
    api: Api, receiver: Receiver
) -> None:
    event_type = _event_type()
    destination = await api.create_webhook(f"{receiver.url}/hook", [event_type])
    path = f"{DESTINATIONS}/{destination['id']}"
    failed = []
    for n in range(6):  # a success between failures: never 2 dead letters in a row
        failed.append(
            await _publish_until(api, receiver, destination["id"], event_type, "failed", n)
        )
        await _publish_until(api, receiver, destination["id"], event_type, "succeeded", n)
    # The receiver is fixed; one delivery a second, so the receiver's log order is the
    # order they were attempted in (and the recovery goes through the rate limit).
    receiver.status = 200
    status, body = await api.call("PATCH", path, {"rate_limit": 1})
    assert status == 200, body
    receiver.requests.clear()
    window = {"since": failed[1]["created_at"], "until": failed[5]["created_at"]}
    key = {"Idempotency-Key": ids.new_id("k")}
    status, job = await api.call("POST", f"{path}/recover", window, headers=key)
    assert status == 202, job
    assert job["object"] == "recovery" and job["id"].startswith("rcv_")
    assert (job["total"], job["since"], job["until"]) == (4, window["since"], window["until"])
    assert job["status"] in ("running", "completed")
    # The same request again is the same job, not a second one.
    status, again = await api.call("POST", f"{path}/recover", window, headers=key)
    assert (status, again["id"]) == (202, job["id"])

    finished = await _finished(api, destination["id"], job["id"])
    assert (finished["status"], finished["requeued"], finished["skipped"]) == ("completed", 4, 0)
    await _delivered_all(api, destination["id"], job["id"], 4)
    received = receiver.bodies("/hook")
    assert [b["id"] for b in received] == [d["event_id"] for d in failed[1:5]]
    assert [b["data"]["n"] for b in received] == [1, 2, 3, 4]
    gaps_s = [
        later.received_at - earlier.received_at
        for earlier, later in zip(receiver.requests, receiver.requests[1:], strict=False)
    ]
    assert min(gaps_s) > 0.5, gaps_s  # paced by the rate limit, not sent at once
    assert {r.headers["webhook-id"] for r in receiver.requests} == {
        d["id"] for d in failed[1:5]
    }  # the same delivery ids: a receiver can deduplicate
    for delivery in failed[1:5]:
        await _delivery(api, destination["id"], delivery["event_id"], "succeeded")

    # A second recovery of the window finds nothing failed any more.
    status, second = await api.call("POST", f"{path}/recover", window)
    assert (status, second["total"]) == (202, 0), second
    assert (await _finished(api, destination["id"], second["id"]))["status"] == "completed"
    assert len(receiver.requests) == 4


async def test_enable_with_recover_since_recovers_what_failed_before_the_disable(
    api: Api, receiver: Receiver
) -> None:
    receiver.status = 500
    event_type = _event_type()
    destination = await api.create_webhook(f"{receiver.url}/down", [event_type])
    path = f"{DESTINATIONS}/{destination['id']}"
    first = await api.publish(event_type, {"n": 0})
    since = (await _delivery(api, destination["id"], first, "failed"))["created_at"]
    second = await api.publish(event_type, {"n": 1})  # the second dead letter in a row

    async def disabled() -> bool:
        _, body = await api.call("GET", path)
        return bool(body["status"] == "inactive")

    await eventually(disabled, timeout_s=30, what="the destination auto-disabled")
    await _delivery(api, destination["id"], second, "failed")
    status, body = await api.call("POST", f"{path}/recover", {"since": since})
    assert (status, body["errors"][0]["code"]) == (422, "destination_inactive"), body
    # A bad window is refused before anything changes.
    status, body = await api.call("POST", f"{path}/enable", {"recover_since": "yesterday"})
    assert status == 400 and "recover_since" in body["errors"], body
    _, current = await api.call("GET", path)
    assert current["status"] == "inactive"

    receiver.status = 200
    receiver.requests.clear()
    status, body = await api.call("POST", f"{path}/enable", {"recover_since": since})
    assert status == 200, body
    assert body["status"] == "pending_verification"
    recovery = body["recovery"]
    assert (recovery["object"], recovery["total"]) == ("recovery", 2)
    finished = await _finished(api, destination["id"], recovery["id"])
    assert (finished["status"], finished["requeued"]) == ("completed", 2)
    await _delivered_all(api, destination["id"], recovery["id"], 2)
    assert sorted(b["id"] for b in receiver.bodies("/down")) == sorted([first, second])
    # Without a body, enable is what it was.
    status, body = await api.call("POST", f"{path}/enable")
    assert status == 200 and "recovery" not in body, body


async def test_another_tenant_s_destination_and_recoveries_are_not_found(
    api: Api, other_tenant: Api, receiver: Receiver
) -> None:
    destination = await api.create_webhook(f"{receiver.url}/mine", [_event_type()])
    path = f"{DESTINATIONS}/{destination['id']}"
    window = {"since": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}
    status, job = await api.call("POST", f"{path}/recover", window)
    assert (status, job["total"]) == (202, 0), job
    status, body = await other_tenant.call("POST", f"{path}/recover", window)
    assert (status, body["errors"][0]["code"]) == (404, "resource_missing"), body
    status, body = await other_tenant.call("GET", f"{path}/recoveries/{job['id']}")
    assert status == 404, body
    status, body = await api.call("GET", f"{path}/recoveries/rcv_unknown")
    assert status == 404, body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "since"),
        ({"since": "2026-12-01"}, "since"),  # no offset
        ({"since": "not a time"}, "since"),
        ({"since": 1700000000}, "since"),
        ({"since": "2026-12-01T10:00:00Z", "until": "2026-12-01T09:00:00Z"}, "since"),
        ({"since": "2026-10-01T10:00:00Z", "until": "2026-12-01T10:00:00Z"}, "until"),
        ({"since": "2026-12-01T10:00:00Z", "status": "failed"}, "status"),
        (["2026-12-01T10:00:00Z"], "body"),
    ],
)
async def test_a_bad_window_is_a_400_naming_the_field(
    api: Api, receiver: Receiver, body: Any, field: str
) -> None:
    destination = await api.create_webhook(f"{receiver.url}/v", [_event_type()])
    status, answer = await api.call("POST", f"{DESTINATIONS}/{destination['id']}/recover", body)
    assert status == 400, answer
    assert field in answer["errors"], answer


@pytest.fixture
async def pool(services: Services) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(services.database_url)
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_job_whose_process_went_away_is_resumed_by_the_api(
    api: Api, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    """A job left running by a process that died (its lease lapsed) is taken over."""
    receiver.status = 500
    event_type = _event_type()
    destination = await api.create_webhook(f"{receiver.url}/resume", [event_type])
    event_id = await api.publish(event_type)
    delivery = await _delivery(api, destination["id"], event_id, "failed")
    receiver.status = 200
    receiver.requests.clear()
    job_id = ids.new_id("rcv_")
    until = datetime.now(UTC)
    since = until - timedelta(hours=1)
    async with pool.acquire() as connection:  # what a process that died just now left
        generation = await connection.fetchval(
            "select coalesce(destination_generation, '') from deliveries"
            " where tenant = 'dev' and id = $1",
            delivery["id"],
        )
        await connection.execute(
            "insert into recoveries (tenant, id, destination_id, destination_generation,"
            " since, until, owner, lease_until, total) values ('dev', $1, $2, $3, $4, $5,"
            " 'own_gone', now() - interval '1 second', 1)",
            job_id, destination["id"], generation or None, since, until,
        )  # fmt: skip
        await connection.execute(
            TAKE_ITEMS, "dev", job_id, destination["id"], generation, since, until
        )
    finished = await _finished(api, destination["id"], job_id)
    assert (finished["status"], finished["requeued"]) == ("completed", 1)
    await eventually(lambda: receiver.bodies("/resume"), what="the resumed delivery")
    assert [b["id"] for b in receiver.bodies("/resume")] == [event_id]
    await _delivery(api, destination["id"], event_id, "succeeded")


SECOND_API_PORT = API_PORT + 5  # api + 2, 4, 6, 7 and 8 are other tests' extra APIs
KILLED_JOB_ITEMS = 3000


async def _failed_deliveries(pool: asyncpg.Pool, destination_id: str, generation: str) -> str:
    """KILLED_JOB_ITEMS failed deliveries of the destination in the index, as if its receiver
    had been down for a while (rows like the indexer's; far quicker than exhausting retries);
    the delivery of the n-th event, in publish order, is `evdl_<the tag returned>_<n>`."""
    start = datetime.now(UTC) - timedelta(minutes=10)
    tag = ids.new_id("x").lower()
    events = [
        ("dev", f"evt_{tag}_{n}", "recovery_check.bulk", orjson.dumps({"n": n}).decode(),
         start + timedelta(milliseconds=n))
        for n in range(KILLED_JOB_ITEMS)
    ]  # fmt: skip
    async with pool.acquire() as connection, connection.transaction():
        await connection.executemany(
            "insert into events (tenant, id, type, data, created_at)"
            " values ($1, $2, $3, $4::jsonb, $5)",
            events,
        )
        await connection.executemany(
            "insert into deliveries (id, tenant, event_id, event_type, destination_id,"
            " destination_generation, status, attempts, created_at, updated_at)"
            " values ($1, 'dev', $2, $3, $4, $5, 'failed', 4, $6, now())",
            [
                (f"evdl_{tag}_{n}", e[1], e[2], destination_id, generation, e[4])
                for n, e in enumerate(events)
            ],
        )
    return tag


@pytest.fixture
def short_lease_api(services: Services) -> Iterator[subprocess.Popen[bytes]]:
    """A second API process whose recovery leases last 2 s (the stack's: 30 s)."""
    log = TEST_DATA / "logs" / "api-recovery-killed.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = herald_env(services, HERALD_API_PORT=str(SECOND_API_PORT), HERALD_RECOVERY_LEASE_S="2")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(ROOT / ".venv/bin/herald"), "api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_ready(process, SECOND_API_PORT, log, timeout_s=60)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


async def test_a_job_whose_api_process_is_killed_is_finished_by_another(
    api: Api,
    receiver: Receiver,
    pool: asyncpg.Pool,
    short_lease_api: subprocess.Popen[bytes],
) -> None:
    """SIGKILL the API process running a recovery mid-way: the stack's API takes the job
    over once its lease (2 s here) lapses, and every delivery is requeued; only the page in
    flight at the kill may be sent twice."""
    destination = await api.create_webhook(f"{receiver.url}/killed", ["recovery_check.*"])
    first = await api.publish("recovery_check.seed")
    seed = await _delivery(api, destination["id"], first, "succeeded")
    async with pool.acquire() as connection:
        generation = await connection.fetchval(
            "select destination_generation from deliveries where tenant = 'dev' and id = $1",
            seed["id"],
        )
    tag = await _failed_deliveries(pool, destination["id"], generation)
    path = f"{DESTINATIONS}/{destination['id']}"
    # Hold the job mid-way, whatever the machine's speed: the row of the delivery halfway
    # through is locked, so claiming it waits until the kill (the page in flight then is
    # rolled back with the killed process's connection).
    holder = await pool.acquire()
    hold = holder.transaction()
    await hold.start()
    await holder.execute(
        "select 1 from deliveries where tenant = 'dev' and id = $1 for update",
        f"evdl_{tag}_{KILLED_JOB_ITEMS // 2}",
    )
    headers = {"Authorization": f"Bearer {DEV_KEY}"}
    async with aiohttp.ClientSession(
        base_url=f"http://127.0.0.1:{SECOND_API_PORT}", headers=headers
    ) as session:
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        status, job = await Api(session).call("POST", f"{path}/recover", {"since": since})
    assert (status, job["total"]) == (202, KILLED_JOB_ITEMS), job

    async def held() -> bool:
        waiting = await pool.fetchval("select count(*) from pg_locks where not granted")
        return bool(waiting)

    try:
        await eventually(held, what="the recovery waiting on the held delivery")
        _, at_kill = await api.call("GET", f"{path}/recoveries/{job['id']}")
        short_lease_api.send_signal(signal.SIGKILL)
        await asyncio.to_thread(short_lease_api.wait, 30)
    finally:
        await hold.rollback()
        await pool.release(holder)
    assert 0 < at_kill["requeued"] < KILLED_JOB_ITEMS, at_kill
    finished = await _finished(api, destination["id"], job["id"], timeout_s=90)
    assert (finished["status"], finished["requeued"]) == ("completed", KILLED_JOB_ITEMS)
    expected = {f"{n}" for n in range(KILLED_JOB_ITEMS)}

    def received() -> set[str]:
        return {str(b["data"]["n"]) for b in receiver.bodies("/killed") if "n" in b["data"]}

    await eventually(lambda: received() == expected, timeout_s=120, what="every delivery")
    bodies = [b for b in receiver.bodies("/killed") if "n" in b["data"]]
    assert len(bodies) - KILLED_JOB_ITEMS <= PAGE_ITEMS  # at most the page in flight again
    took_s = (
        datetime.fromisoformat(finished["updated_at"]) - datetime.fromisoformat(job["created_at"])
    ).total_seconds()
    print(
        f"recovered {KILLED_JOB_ITEMS} in {took_s:.1f}s, killed at {at_kill['requeued']}"
        f" requeued, {len(bodies) - KILLED_JOB_ITEMS} sent twice"
    )
