"""Two API processes behind one broker: a change made through one is in force through the
other as soon as the call returned (reads and event routing alike)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.integration.api_client import Api
from tests.integration.conftest import (
    API_PORT,
    Services,
    Stack,
    extra_api,
)
from tests.support import Receiver, eventually

SECOND_PORT = API_PORT + 2


@pytest.fixture(scope="module")
def second_api(services: Services, stack: Stack) -> Iterator[str]:
    with extra_api(services, "api-2", SECOND_PORT) as url:
        yield url


@pytest.fixture
async def api_b(second_api: str, stack: Stack) -> AsyncIterator[Api]:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with aiohttp.ClientSession(base_url=second_api, headers=headers) as session:
        yield Api(session)


async def test_writes_through_one_are_read_through_the_other(api: Api, api_b: Api) -> None:
    for _ in range(5):
        created = await api.create_webhook("https://example.com/a", ["two.apis"])
        path = f"/v2/event-destinations/{created['id']}"
        status, seen = await api_b.call("GET", path)
        assert (status, seen["id"]) == (200, created["id"])
        status, _ = await api_b.call("PATCH", path, {"name": "renamed by b"})
        assert status == 200
        assert (await api.call("GET", path))[1]["name"] == "renamed by b"
        assert (await api.call("DELETE", path))[0] == 200
        assert (await api_b.call("GET", path))[0] == 404


async def test_event_published_through_the_other_sees_the_new_destination(
    api: Api, api_b: Api, receiver: Receiver
) -> None:
    for i in range(5):
        created = await api.create_webhook(f"{receiver.url}/n{i}", [f"cross.process{i}"])
        event_id = await api_b.publish(f"cross.process{i}", {"i": i})
        await eventually(lambda i=i: receiver.bodies(f"/n{i}"), what="the very next event")
        assert receiver.bodies(f"/n{i}")[0]["id"] == event_id
        assert created["id"]


async def test_idempotency_key_holds_across_processes(api: Api, api_b: Api) -> None:
    key = f"idem-{uuid.uuid4().hex}"
    body = {"name": "idem", "webhook": {"url": "https://example.com/idem"}, "events": ["*"]}
    headers = {"Idempotency-Key": key}
    first = await api.call("POST", "/v2/event-destinations", body, headers=headers)
    again = await api_b.call("POST", "/v2/event-destinations", body, headers=headers)
    assert first[0] == again[0] == 201
    assert again[1]["id"] == first[1]["id"], "the second process must replay the first response"
    # The generated secret is returned once, in the create response: the replay may not
    # hand it out again from storage.
    assert again[1]["webhook"].get("secret") == first[1]["webhook"].get("secret")
    status, error = await api_b.call(
        "POST", "/v2/event-destinations", {**body, "name": "other"}, headers=headers
    )
    assert status == 409
    assert error["errors"][0]["code"] == "idempotency_error"
    status, listed = await api_b.call("GET", "/v2/event-destinations?limit=100")
    assert [d["id"] for d in listed["data"]].count(first[1]["id"]) == 1
