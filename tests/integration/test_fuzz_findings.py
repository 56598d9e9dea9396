"""What the schema fuzzer found, pinned against the running stack (each was a 5xx or a
stalled index before its fix)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from pipeline import ids
from pipeline.timeutil import now_iso
from pipeline.topics import EVENTS
from tests.integration.api_client import Api
from tests.integration.conftest import Services
from tests.support import Received, Receiver, eventually


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v2/events?type=a.b%00", "type"),
        ("/v2/events/evt_x%00", "event_id"),
        ("/v2/event-deliveries/evdl_x%00", "delivery_id"),
        ("/v2/event-destinations/evtd_x%00/event-deliveries?event_type=a", "destination_id"),
    ],
)
async def test_nul_in_a_parameter_is_400_naming_it(api: Api, path: str, field: str) -> None:
    status, body = await api.call("GET", path)
    assert status == 400, body  # was a 503: PostgreSQL refuses U+0000 in a query
    assert list(body["errors"]) == [field]


async def test_nul_in_event_data_is_400(api: Api) -> None:
    status, body = await api.call("POST", "/v2/events", {"type": "a.b", "data": {"a": "\x00"}})
    assert (status, list(body["errors"])) == (400, ["data"])


async def test_non_ascii_hookdeck_token_is_400(api: Api) -> None:
    status, body = await api.call(
        "POST",
        "/v2/event-destinations",
        {"name": "h", "type": "hookdeck", "hookdeck": {"token": "\x80token"}, "events": ["*"]},
    )
    assert (status, list(body["errors"])) == (400, ["hookdeck.token"])  # was a 500


class NulReceiver(Receiver):
    """A receiver whose response body holds NUL bytes."""

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(Received(request.path, dict(request.headers), await request.read()))
        return web.Response(body=b"ok\x00ok")


@pytest.fixture
async def nul_receiver() -> AsyncIterator[str]:
    receiver = await NulReceiver().start()
    yield receiver.url
    await receiver.stop()


async def test_nul_never_stalls_the_index(api: Api, services: Services, nul_receiver: str) -> None:
    """An event from before the API refused NUL (written straight to Kafka) and a receiver
    answering NUL bytes are both indexed, with U+FFFD in place of U+0000."""
    old_id = ids.new_id(ids.EVENT)
    old = {
        "id": old_id,
        "object": "event",
        "type": "nul_check.old",
        "data": {"a": "x\x00y"},
        "created_at": now_iso(),
        "tenant": "dev",
        "route_after": {},
    }
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(EVENTS, orjson.dumps(old), key=old_id.encode())
    finally:
        await producer.stop()
    destination = await api.create_webhook(f"{nul_receiver}/n", ["nul_check.answer"])
    await api.publish("nul_check.answer", {})

    async def indexed_old() -> Any:
        status, body = await api.call("GET", f"/v2/events/{old_id}")
        return body if status == 200 else None

    assert (await eventually(indexed_old, what="the old event indexed"))["data"] == {
        "a": "x\ufffdy"
    }

    async def attempt_body() -> Any:
        _, log = await api.call(
            "GET", f"/v2/event-destinations/{destination['id']}/event-deliveries"
        )
        if not log["data"]:
            return None
        _, delivery = await api.call("GET", f"/v2/event-deliveries/{log['data'][0]['id']}")
        return delivery["attempts"][0]["response_body"] if delivery["attempts"] else None

    assert await eventually(attempt_body, what="the attempt indexed") == "ok\ufffdok"
