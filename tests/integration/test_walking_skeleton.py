"""End to end on the real broker: create a webhook destination, publish, receive signed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from tests.integration.conftest import Stack
from tests.support import Receiver, eventually


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.stop()


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with aiohttp.ClientSession(base_url=stack.api_url, headers=headers) as session:
        yield session


async def test_event_reaches_subscribed_webhook_signed(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    created = await http.post(
        "/v2/event-destinations",
        json={
            "name": "skeleton",
            "webhook": {"url": f"{receiver.url}/hook"},
            "events": ["task_run.completed"],
        },
    )
    assert created.status == 201, await created.text()
    destination = await created.json()
    secret = destination["webhook"]["secret"]
    assert secret.startswith("whsec_")
    assert destination["status"] == "pending_verification"

    # Read-your-writes: the API's view has the destination as soon as create returned.
    fetched = await http.get(f"/v2/event-destinations/{destination['id']}")
    assert fetched.status == 200
    assert "secret" not in (await fetched.json())["webhook"]

    published = await http.post(
        "/v2/events",
        json={"type": "task_run.completed", "data": {"task_run_id": "tr_1", "ok": True}},
    )
    assert published.status == 202, await published.text()
    event = await published.json()
    # Not subscribed: must not be delivered.
    other = await http.post("/v2/events", json={"type": "task_run.started", "data": {}})
    assert other.status == 202

    await eventually(lambda: receiver.requests, what="the webhook delivery")
    request = receiver.requests[0]
    assert request.path == "/hook"
    body = orjson.loads(request.body)
    assert body == {
        "id": event["id"],
        "object": "event",
        "type": "task_run.completed",
        "data": {"task_run_id": "tr_1", "ok": True},
        "created_at": event["created_at"],
    }
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["webhook-id"].startswith("evdl_")
    # The official Standard Webhooks library accepts the signature.
    verified = Webhook(secret).verify(request.body, headers)
    assert verified["id"] == event["id"]
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "A" * 32).verify(request.body, headers)

    async def active() -> bool:
        response = await http.get(f"/v2/event-destinations/{destination['id']}")
        return bool((await response.json())["status"] == "active")

    await eventually(active, what="the destination to become active after its first success")
    assert len(receiver.requests) == 1


async def test_destination_created_after_publish_gets_nothing_older(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    before = await http.post("/v2/events", json={"type": "order.placed", "data": {"n": 1}})
    assert before.status == 202
    created = await http.post(
        "/v2/event-destinations",
        json={"name": "late", "webhook": {"url": f"{receiver.url}/late"}, "events": ["order.*"]},
    )
    assert created.status == 201
    after = await http.post("/v2/events", json={"type": "order.placed", "data": {"n": 2}})
    assert after.status == 202
    await eventually(lambda: receiver.requests, what="the delivery of the later event")
    ids = [orjson.loads(r.body)["id"] for r in receiver.requests]
    assert ids == [(await after.json())["id"]]


async def test_health_and_readiness(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        for base in (stack.api_url, stack.worker_url):
            ready = await session.get(f"{base}/readyz")
            assert ready.status == 200, await ready.text()
            assert (await ready.json())["status"] == "ready"
            assert (await session.get(f"{base}/metrics")).status == 200
        # The worker's consume loops report their own liveness (issue 12, B9).
        checks = (await (await session.get(f"{stack.worker_url}/readyz")).json())["checks"]
        assert checks["delivery_loop"] == checks["index_loop"] == "ok", checks
