"""HERALD_HTTPS_ONLY: plain-http webhook URLs are refused at the API (400 naming the field)
and at delivery time (a permanent failure), for records made before it was switched on.

The API here is built in-process with the setting on, against the session's real Kafka and
PostgreSQL (the shared stack keeps it off, since its receivers speak plain http).
"""

from __future__ import annotations

from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from api.app import create_app
from pipeline import ids
from pipeline.settings import Settings
from pipeline.signing import generate_secret
from pipeline.sinks.base import PermanentError, Target
from pipeline.sinks.webhook import WebhookSink
from tests.integration.api_client import Api
from tests.integration.conftest import DEV_KEY, ENCRYPTION_KEY, Services
from tests.support import Receiver

HEADERS = {"Authorization": f"Bearer {DEV_KEY}"}
# aiohttp 3.14 warns that the API keeps its request state under str keys (not RequestKey);
# in-process, filterwarnings=error would turn that into a 500.
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")


def _settings(services: Services, **changes: Any) -> Settings:
    return Settings(
        kafka_bootstrap=services.kafka_bootstrap,
        database_url=services.database_url,
        encryption_keys=ENCRYPTION_KEY,
        dev_api_key=DEV_KEY,
        outbound_allowlist=["127.0.0.1/32"],
        **changes,
    )


async def test_api_refuses_plain_http_urls(
    aiohttp_client: AiohttpClient, services: Services, api: Api
) -> None:
    # Made through the stack's API (setting off): a record from before the switch.
    before = await api.create_webhook("http://e.example/old", ["https_only.never"])
    client = await aiohttp_client(create_app(_settings(services, https_only=True)))
    body = {"name": "n", "events": ["https_only.never"], "webhook": {"url": "http://e.example"}}
    response = await client.post("/v2/event-destinations", json=body, headers=HEADERS)
    assert response.status == 400
    assert list((await response.json())["errors"]) == ["webhook.url"]

    path = f"/v2/event-destinations/{before['id']}"
    patch = {"webhook": {"url": "http://e.example/other"}}
    response = await client.patch(path, json=patch, headers=HEADERS)
    assert response.status == 400
    assert list((await response.json())["errors"]) == ["webhook.url"]
    # Moving it to https is how such a record is fixed.
    response = await client.patch(
        path, json={"webhook": {"url": "https://e.example/new"}}, headers=HEADERS
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["webhook"]["url"] == "https://e.example/new"


async def test_delivery_to_plain_http_is_a_permanent_failure(
    services: Services, receiver: Receiver
) -> None:
    target = Target(
        ids.new_id(ids.DESTINATION), {"url": f"{receiver.url}/h"}, {"secret": generate_secret()}
    )
    body = b'{"id": "evt_1"}'
    strict, lenient = WebhookSink(), WebhookSink()
    try:
        publisher = await strict.open(target, _settings(services, https_only=True))
        with pytest.raises(PermanentError, match="outbound policy"):
            await publisher.publish("evdl_1", {"id": "evt_1"}, body)
        assert receiver.requests == []
        # The same record with the setting off is delivered: the scheme was the only reason.
        publisher = await lenient.open(target, _settings(services))
        result = await publisher.publish("evdl_2", {"id": "evt_1"}, body)
        assert result.response_status == 200
        assert [r.headers["webhook-id"] for r in receiver.requests] == ["evdl_2"]
    finally:
        await strict.aclose()
        await lenient.aclose()
