"""Credentials through the whole stack (issue 12: B6, B7, C13, C14).

Custom header values are refused when they could break a request, sealed and never shown,
yet sent; rotated secrets keep signing for their own 24 h; credential changes racing each
other are merged, not overwritten; credentials never follow a destination to a new server.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from pipeline.crypto import Sealer
from pipeline.timeutil import now_iso
from tests.integration.api_client import Api
from tests.integration.conftest import ENCRYPTION_KEY, Services, Stack
from tests.integration.test_secrets_at_rest import _sealed
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


def _summary_since(logs: str, since: str) -> bool:
    """Whether the logs hold a delivery summary line with a timestamp at or after `since`."""
    for line in logs.splitlines():
        if '"counts"' in line:
            entry = orjson.loads(line)
            if "counts" in entry and entry["timestamp"] >= since:
                return True
    return False


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


async def test_header_values_are_sent_but_never_shown(
    api: Api, receiver: Receiver, stack: Stack, made: list[str]
) -> None:
    token = "Bearer " + secrets.token_urlsafe(16)
    headers = {"Authorization": token, "X-Team": "core"}
    created = await _create(
        api, made, {"webhook": {"url": f"{receiver.url}/h", "custom_headers": headers}}
    )
    path = f"{D}/{created['id']}"
    listed = (await api.call("GET", D + "?limit=100"))[1]["data"]
    shown = [created, (await api.call("GET", path))[1], *(d for d in listed if d["id"] in made)]
    assert len(shown) == 3
    for body in shown:
        assert body["webhook"]["custom_headers"] == ["Authorization", "X-Team"]
        assert token not in str(body)
    # A PATCH of the same origin without the headers keeps them (names and values).
    status, patched = await api.call("PATCH", path, {"webhook": {"url": f"{receiver.url}/p"}})
    assert status == 200, patched
    assert patched["webhook"]["custom_headers"] == ["Authorization", "X-Team"]
    request = await _test_delivery(api, receiver, created["id"])
    answered = now_iso()
    assert (request.path, request.headers["Authorization"]) == ("/p", token)
    assert request.headers["X-Team"] == "core"

    def logs() -> str:
        return "\n".join(p.read_text(errors="replace") for p in stack.logs.glob("*.log"))

    # The worker's summary of the outcomes it recorded comes after the receiver answered:
    # wait for one logged since, so the scan reads logs that saw this delivery's outcome.
    await eventually(
        lambda: _summary_since(logs(), answered),
        timeout_s=30,
        what="a delivery summary line after the delivery",
    )
    assert token.split()[1] not in logs()


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


async def test_a_patch_racing_a_rotation_keeps_the_new_secret(
    api: Api, receiver: Receiver, made: list[str]
) -> None:
    created = await _create(api, made, {"webhook": {"url": f"{receiver.url}/before"}})
    path = f"{D}/{created['id']}"
    (rotate_status, rotation), (patch_status, patched) = await asyncio.gather(
        api.call("POST", path + "/rotate-secret"),
        api.call("PATCH", path, {"webhook": {"url": f"{receiver.url}/after"}}),
    )
    assert (rotate_status, patch_status) == (200, 200), (rotation, patched)
    request = await _test_delivery(api, receiver, created["id"])
    assert request.path == "/after"
    Webhook(rotation["webhook"]["secret"]).verify(request.body, request.headers)
    Webhook(created["webhook"]["secret"]).verify(request.body, request.headers)


def _opened(sealed: str, destination_id: str) -> dict[str, object]:
    return Sealer(ENCRYPTION_KEY).open(sealed, destination_id)


@pytest.mark.parametrize(
    ("type_name", "config", "same_server", "other_server"),
    [
        (
            "rabbitmq",
            {"server_url": "amqp://app:pw-rabbitmq@rabbit-a.example:5672", "exchange": "ev"},
            {"server_url": "rabbit-a.example:5672", "exchange": "other"},
            {"server_url": "rabbit-b.example:5672", "exchange": "other"},
        ),
        (
            "kafka",
            {
                "bootstrap_servers": "kafka-a.example:9092",
                "topic": "t",
                "username": "app",
                "password": "pw-kafka",
            },
            {"bootstrap_servers": "kafka-a.example:9092", "topic": "u"},
            {"bootstrap_servers": "plaintext.example:9092", "topic": "u"},
        ),
    ],
)
async def test_credentials_stay_with_their_server(
    api: Api,
    services: Services,
    made: list[str],
    type_name: str,
    config: dict[str, Any],
    same_server: dict[str, Any],
    other_server: dict[str, Any],
) -> None:
    created = await _create(api, made, {"type": type_name, type_name: config})
    path = f"{D}/{created['id']}"
    status, body = await api.call("PATCH", path, {type_name: same_server})
    assert status == 200, body
    kept = _opened(await _sealed(services.kafka_bootstrap, created["id"]), created["id"])
    assert kept == {"username": "app", "password": f"pw-{type_name}"}
    status, body = await api.call("PATCH", path, {type_name: other_server})
    assert status == 200, body
    sealed = await _sealed(services.kafka_bootstrap, created["id"])
    assert sealed == str(None), "no credentials left to seal"
