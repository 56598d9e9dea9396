"""Credentials and headers through the whole stack (issue 12).

Custom header values are refused when they could break a request; rotated secrets keep
signing for their own 24 h.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from tests.integration.api_client import Api
from tests.support import Receiver, eventually

D = "/v2/event-destinations"


@pytest.fixture
async def made(api: Api) -> AsyncIterator[list[str]]:
    """Ids to delete once the test is over (so no destination outlives its test)."""
    ids: list[str] = []
    yield ids
    for destination_id in ids:
        await api.call("DELETE", f"{D}/{destination_id}")


async def _create(api: Api, made: list[str], body: dict[str, Any]) -> dict[str, Any]:
    status, created = await api.call(
        "POST", D, {"name": "creds", "events": ["creds.never"], **body}
    )
    assert status == 201, created
    made.append(created["id"])
    return dict(created)


async def _test_delivery(api: Api, receiver: Receiver, destination_id: str) -> Any:
    """Send the destination a test event; the request its receiver got."""
    status, event = await api.call("POST", f"{D}/{destination_id}/test")
    assert status == 202, event

    def arrived() -> Any:
        return next((r for r in receiver.requests if event["id"].encode() in r.body), None)

    return await eventually(arrived, what="the test delivery")


async def test_a_header_that_could_split_the_request_is_a_400(api: Api, made: list[str]) -> None:
    injected = {"url": "https://e.example/h", "custom_headers": {"X-Test": "a\r\nInjected: yes"}}
    status, body = await api.call("POST", D, {"name": "x", "events": ["a.b"], "webhook": injected})
    assert status == 400, body
    assert list(body["errors"]) == ["webhook.custom_headers.X-Test"]
    created = await _create(api, made, {"webhook": {"url": "https://e.example/h"}})
    status, body = await api.call(
        "PATCH", f"{D}/{created['id']}", {"webhook": {**injected, "custom_headers": {"Host": "x"}}}
    )
    assert status == 400, body
    assert list(body["errors"]) == ["webhook.custom_headers.Host"]


async def test_a_second_rotation_keeps_the_first_secret_signing(
    api: Api, receiver: Receiver, made: list[str]
) -> None:
    created = await _create(api, made, {"webhook": {"url": f"{receiver.url}/r"}})
    path = f"{D}/{created['id']}/rotate-secret"
    second = (await api.call("POST", path))[1]["webhook"]["secret"]
    third = (await api.call("POST", path))[1]["webhook"]["secret"]
    request = await _test_delivery(api, receiver, created["id"])
    assert request.headers["webhook-signature"].count("v1,") == 3
    for secret in (created["webhook"]["secret"], second, third):
        Webhook(secret).verify(request.body, request.headers)
