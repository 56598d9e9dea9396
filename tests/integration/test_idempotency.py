"""Idempotency-Key against the real stack: a dead owner's claim is taken over, a publish the
broker did not fully confirm keeps its key and is completed (not repeated) by a retry, and a
create whose fold was not seen in time is not created twice by its retry."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from api.auth import hash_key
from api.idempotency import Claim, _renew
from pipeline.db import create_pool
from tests.integration.api_client import Api
from tests.integration.conftest import API_PORT, DEV_KEY, Services, Stack, extra_api
from tests.support import Receiver, eventually

# Ports of their own (the stack's API + 2 and + 4 are taken by other modules).
BIG_EVENTS_PORT = API_PORT + 6
IMPATIENT_PORT = API_PORT + 7
# Over the producer's 1 MiB request limit: the broker never gets such an event.
TOO_LARGE_DATA = {"blob": "x" * 1_200_000}


def _key() -> str:
    return f"idem-{uuid.uuid4().hex}"


async def _post_raw(api: Api, path: str, raw: bytes, key: str) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", "Idempotency-Key": key}
    # A stream, not bytes: aiohttp warns about bodies over 1 MiB given as bytes.
    async with api.session.post(path, data=io.BytesIO(raw), headers=headers) as response:
        return response.status, await response.json()


@pytest.fixture
async def database(services: Services) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(services.database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def test_a_claim_whose_process_died_is_taken_over_when_its_lease_runs_out(
    api: Api, database: asyncpg.Connection
) -> None:
    key = _key()
    raw = json.dumps({"type": "lease.check", "data": {}}).encode()
    request_hash = hashlib.sha256(b"POST /v2/events\n" + raw).hexdigest()
    # What a process killed between claiming the key and storing its response leaves: a
    # claim whose lease it no longer renews (here, 5 s left of it).
    await database.execute(
        "insert into idempotency_keys (tenant, api_key, key, request_hash, owner, lease_until) "
        "values ('dev', $1, $2, $3, 'own_killed', now() + interval '5 seconds')",
        hash_key(DEV_KEY),
        key,
        request_hash,
    )
    status, body = await _post_raw(api, "/v2/events", raw, key)
    assert (status, body["errors"][0]["code"]) == (409, "idempotency_key_in_use")

    async def taken_over() -> Any:
        status, body = await _post_raw(api, "/v2/events", raw, key)
        return body if status == 202 else None

    accepted = await eventually(taken_over, timeout_s=30, what="the lapsed claim taken over")
    status, again = await _post_raw(api, "/v2/events", raw, key)
    assert (status, again["id"]) == (202, accepted["id"]), "then it is the key's response"
    row = await database.fetchrow(
        "select status, owner, lease_until from idempotency_keys where key = $1", key
    )
    assert (row["status"], row["owner"], row["lease_until"]) == (202, None, None)


@pytest.fixture(scope="module")
def big_events_api(services: Services, stack: Stack) -> Iterator[str]:
    """An API that admits events larger than the producer can send: the broker refuses one
    event of a batch while it takes the others, a partial publish on demand."""
    with extra_api(
        services, "api-big-events", BIG_EVENTS_PORT, HERALD_MAX_EVENT_BYTES="2000000"
    ) as url:
        yield url


@pytest.fixture
async def big(big_events_api: str, stack: Stack) -> AsyncIterator[Api]:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with aiohttp.ClientSession(base_url=big_events_api, headers=headers) as session:
        yield Api(session)


async def test_a_partly_published_batch_says_which_and_its_retry_publishes_only_the_rest(
    big: Api, receiver: Receiver
) -> None:
    tag = uuid.uuid4().hex[:8]
    await big.create_webhook(f"{receiver.url}/{tag}", [f"partial_{tag}.*"])
    events = [
        {"type": f"partial_{tag}.first", "data": {"n": 0}},
        {"type": f"partial_{tag}.huge", "data": TOO_LARGE_DATA},
        {"type": f"partial_{tag}.third", "data": {"n": 2}},
    ]
    key = _key()
    raw = json.dumps({"events": events}).encode()
    status, first = await _post_raw(big, "/v2/events/batch", raw, key)
    assert status == 202, first
    assert [r["status"] for r in first["data"]] == ["accepted", "failed", "accepted"]
    assert (first["accepted"], first["rejected"], first["failed"]) == (2, 0, 1)
    assert first["data"][1]["error"]["code"] == "service_unavailable"

    status, again = await _post_raw(big, "/v2/events/batch", raw, key)
    assert status == 202, again
    # The same ids for the same events: the retry continued the batch, it did not repeat it.
    assert [r.get("id") for r in again["data"]] == [r.get("id") for r in first["data"]]
    assert [r["status"] for r in again["data"]] == ["accepted", "failed", "accepted"]

    sentinel = await big.publish(f"partial_{tag}.sentinel")
    await eventually(
        lambda: sentinel in [b["id"] for b in receiver.bodies(f"/{tag}")], what="the sentinel"
    )
    delivered = [b["id"] for b in receiver.bodies(f"/{tag}")]
    accepted = [first["data"][0]["id"], first["data"][2]["id"]]
    assert sorted(delivered) == sorted([*accepted, sentinel]), "each accepted event once"


async def test_a_publish_the_broker_did_not_confirm_keeps_its_key(
    big: Api, database: asyncpg.Connection
) -> None:
    key = _key()
    body = {"type": "unconfirmed.single", "data": TOO_LARGE_DATA}
    raw = json.dumps(body).encode()
    status, error = await _post_raw(big, "/v2/events", raw, key)
    assert (status, error["errors"][0]["code"]) == (503, "service_unavailable")
    # Kept, bound to its body and free for the retry (which reuses the first run's ids).
    row = await database.fetchrow("select status, owner from idempotency_keys where key = $1", key)
    assert row is not None and (row["status"], row["owner"]) == (None, None)
    other = json.dumps({**body, "type": "unconfirmed.other"}).encode()
    status, error = await _post_raw(big, "/v2/events", other, key)
    assert (status, error["errors"][0]["code"]) == (409, "idempotency_error")
    status, error = await _post_raw(big, "/v2/events", raw, key)
    assert status == 503, "the same body runs again (not 409 in progress)"


@pytest.fixture(scope="module")
def impatient_api(services: Services, stack: Stack) -> Iterator[str]:
    """An API that gives up on seeing a destination change folded almost at once."""
    with extra_api(
        services, "api-impatient", IMPATIENT_PORT, HERALD_VIEW_WAIT_TIMEOUT_S="0.001"
    ) as url:
        yield url


async def test_a_create_retried_after_a_view_timeout_is_created_once(
    impatient_api: str, stack: Stack, api: Api
) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with aiohttp.ClientSession(base_url=impatient_api, headers=headers) as session:
        impatient = Api(session)

        async def timed_out_after_appending() -> tuple[str, dict[str, Any]] | None:
            key, name = _key(), f"once-{uuid.uuid4().hex}"
            body = {
                "name": name,
                "webhook": {"url": "https://example.com/once"},
                "events": ["once.never"],
            }
            status, answer = await impatient.call(
                "POST", "/v2/event-destinations", body, headers={"Idempotency-Key": key}
            )
            if status == 201:
                await api.call("DELETE", f"/v2/event-destinations/{answer['id']}")
            message = answer["errors"][0]["message"] if status == 503 else ""
            return (key, body) if "accepted but is not visible" in message else None

        key, body = await eventually(timed_out_after_appending, what="a create that timed out")
    status, created = await api.call(
        "POST", "/v2/event-destinations", body, headers={"Idempotency-Key": key}
    )
    assert status == 201, created
    assert created["webhook"]["secret"].startswith("whsec_")
    _, listed = await api.call("GET", "/v2/event-destinations?limit=100")
    mine = [d["id"] for d in listed["data"] if d["name"] == body["name"]]
    for destination_id in mine:
        await api.call("DELETE", f"/v2/event-destinations/{destination_id}")
    assert mine == [created["id"]], "one destination, not one per run"


async def test_a_live_request_keeps_renewing_its_lease(
    services: Services, database: asyncpg.Connection
) -> None:
    """Only a dead owner loses its key: a request running longer than the lease renews it."""
    claim = Claim("dev", hash_key(DEV_KEY), _key(), "own_alive")
    first_until = await database.fetchval(
        "insert into idempotency_keys (tenant, api_key, key, request_hash, owner, lease_until) "
        "values ($1, $2, $3, 'h', $4, now() + interval '1 second') returning lease_until",
        *claim.where,
    )
    pool = await create_pool(services.database_url, max_size=2)
    renewing = asyncio.create_task(_renew(pool, claim, lease_s=1.0))
    try:

        async def past_the_first_lease() -> bool:
            return bool(await database.fetchval("select now() > $1", first_until))

        await eventually(past_the_first_lease, what="the first lease to run out")
        held = await database.fetchval(
            "select lease_until > now() from idempotency_keys where key = $1", claim.key
        )
        assert held, "the lease of a running request lapsed"
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        await pool.close()
