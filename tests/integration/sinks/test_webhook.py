"""Webhook sink conformance against a real aiohttp receiver on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from pipeline.settings import Settings
from tests.integration.sinks.conformance import SinkCase, SinkConformance
from tests.support import Receiver

SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQ="


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestWebhookSink(SinkConformance):
    @pytest.fixture
    async def case(self) -> AsyncIterator[SinkCase]:
        ok = await Receiver().start()
        gone = await Receiver(status=410).start()

        async def received() -> list[bytes]:
            return [r.body for r in ok.requests]

        settings = Settings(outbound_allowlist=["127.0.0.1/32"], delivery_timeout_s=2)
        yield SinkCase(
            "webhook",
            settings,
            raw_config={"url": f"{ok.url}/hook", "secret": SECRET},
            received=received,
            retryable_config={"url": f"http://127.0.0.1:{_closed_port()}/x", "secret": SECRET},
            permanent_config={"url": f"{gone.url}/gone", "secret": SECRET},
            secrets=[SECRET],
        )
        await ok.stop()
        await gone.stop()
