"""Webhook sink conformance against a real aiohttp receiver on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from pipeline.outbound import AddressPolicy
from pipeline.settings import Settings
from pipeline.sinks import load_sink
from pipeline.sinks.base import PermanentError, Target
from tests.integration.sinks.conformance import SinkCase, SinkConformance, envelope
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


@pytest.mark.parametrize("host", ["localhost", socket.gethostname()])
async def test_a_name_that_resolves_to_a_refused_address_is_refused(host: str) -> None:
    """Not only IP literals: the name is resolved and every address checked before the
    request. Here the names resolve to loopback, which the default policy refuses."""
    addresses = {info[4][0] for info in socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)}
    assert addresses and not any(AddressPolicy().permits(a) for a in addresses), addresses
    receiver = await Receiver().start()
    port = receiver.url.rsplit(":", 1)[1]
    target = Target("evtd_refused", {"url": f"http://{host}:{port}/hook"}, {"secret": SECRET})
    publisher = await load_sink("webhook").open(target, Settings(delivery_timeout_s=2))
    try:
        with pytest.raises(PermanentError, match="outbound policy"):
            await publisher.publish(*envelope())
    finally:
        await publisher.close()
        await load_sink("webhook").aclose()
        await receiver.stop()
    assert receiver.requests == []
