"""Hookdeck sink conformance against a real aiohttp receiver on 127.0.0.1 standing in for
Hookdeck's ingestion host (Settings.hookdeck_base_url points at it)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from pipeline.settings import Settings
from pipeline.sinks import load_sink
from pipeline.sinks.base import PermanentError
from tests.integration.sinks.conformance import SinkCase, SinkConformance, envelope, target_of
from tests.support import Received, Receiver, eventually


def token(source: str, key: str) -> str:
    return base64.b64encode(f"{source}:{key}".encode()).decode()


GOOD = token("src_good", "k3y-for-the-good-source")
UNAVAILABLE = token("src_unavailable", "k3y-for-the-busy-source")
REVOKED = token("src_revoked", "k3y-that-was-revoked")
# Statuses by source id: what Hookdeck would answer.
STATUS_BY_PATH = {"/src_good": 200, "/src_unavailable": 503, "/src_revoked": 401}


@dataclass
class HookdeckReceiver(Receiver):
    """A Receiver whose answer depends on the source id in the path."""

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(Received(request.path, dict(request.headers), await request.read()))
        return web.Response(status=STATUS_BY_PATH.get(request.path, 404), text="ok")


@pytest.fixture
async def hookdeck() -> AsyncIterator[HookdeckReceiver]:
    server = HookdeckReceiver()
    await server.start()
    yield server
    await server.stop()


class TestHookdeckSink(SinkConformance):
    @pytest.fixture
    def case(self, hookdeck: HookdeckReceiver) -> SinkCase:
        async def received() -> list[bytes]:
            return [r.body for r in hookdeck.requests if r.path == "/src_good"]

        settings = Settings(
            outbound_allowlist=["127.0.0.1/32"],
            hookdeck_base_url=hookdeck.url,
            delivery_timeout_s=2,
        )
        return SinkCase(
            "hookdeck",
            settings,
            raw_config={"api_key": GOOD},  # the alias
            received=received,
            retryable_config={"token": UNAVAILABLE},
            permanent_config={"token": REVOKED},
            secrets=[GOOD, UNAVAILABLE, REVOKED],
        )

    async def test_request_is_signed_with_the_token(
        self, case: SinkCase, hookdeck: HookdeckReceiver
    ) -> None:
        publisher = await load_sink("hookdeck").open(
            target_of(case, case.raw_config), case.settings
        )
        delivery_id, event, body = envelope()
        result = await publisher.publish(delivery_id, event, body)
        await publisher.close()
        assert result.response_status == 200
        request = await eventually(lambda: hookdeck.requests, what="the request")
        headers = {k.lower(): v for k, v in request[0].headers.items()}
        expected = hmac.new(GOOD.encode(), body, hashlib.sha256).digest()
        assert headers["x-hookdeck-signature"] == "v0=" + base64.b64encode(expected).decode()
        assert headers["webhook-id"] == delivery_id
        assert headers["content-type"] == "application/json"
        assert all(GOOD not in value for value in headers.values())

    async def test_refused_address_is_permanent(self, case: SinkCase) -> None:
        settings = Settings(hookdeck_base_url=case.settings.hookdeck_base_url)
        publisher = await load_sink("hookdeck").open(target_of(case, case.raw_config), settings)
        with pytest.raises(PermanentError, match="outbound policy"):
            await publisher.publish(*envelope())
        await publisher.close()
