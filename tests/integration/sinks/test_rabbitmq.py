"""RabbitMQ sink conformance against the session's real RabbitMQ (Debian's package)."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from pipeline.settings import Settings
from pipeline.sinks import load_sink
from pipeline.sinks.base import DeliveryError, PermanentError
from tests.integration.conftest import Services
from tests.integration.sinks.conformance import (
    SinkCase,
    SinkConformance,
    envelope,
    publish_and_read_back,
    target_of,
)
from tests.support import eventually

WRONG_PASSWORD = "not-the-guest-password"
SETTINGS = Settings(outbound_allowlist=["127.0.0.1/32"], delivery_timeout_s=5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Peer:
    """A topic exchange of the test's own, with a queue bound to every routing key."""

    exchange: str
    queue: AbstractQueue
    messages: list[AbstractIncomingMessage] = field(default_factory=list)

    async def drain(self) -> list[AbstractIncomingMessage]:
        while (message := await self.queue.get(no_ack=True, fail=False)) is not None:
            self.messages.append(message)
        return self.messages


@contextlib.asynccontextmanager
async def rabbitmq_peer(amqp_url: str) -> AsyncIterator[Peer]:
    """A topic exchange of its own on the broker at `amqp_url`, a queue bound to it all."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        name = f"herald-test-{uuid.uuid4().hex[:8]}"
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC)
        queue = await channel.declare_queue(name, exclusive=True)
        await queue.bind(exchange, routing_key="#")
        yield Peer(name, queue)
    finally:
        await connection.close()


@pytest.fixture
async def peer(services: Services) -> AsyncIterator[Peer]:
    async with rabbitmq_peer(services.amqp_url) as peer:
        yield peer


class TestRabbitMQSink(SinkConformance):
    @pytest.fixture
    def case(self, services: Services, peer: Peer) -> SinkCase:
        async def received() -> list[bytes]:
            return [message.body for message in await peer.drain()]

        url = urlsplit(services.amqp_url)
        return SinkCase(
            "rabbitmq",
            SETTINGS,
            # A full AMQP URL: the sink splits the username and password out of it.
            raw_config={"server_url": services.amqp_url, "exchange": peer.exchange},
            received=received,
            retryable_config={
                "server_url": f"127.0.0.1:{_closed_port()}",
                "exchange": peer.exchange,
                "username": "herald",
                "password": WRONG_PASSWORD,
            },
            # A wrong password: the broker answers ACCESS_REFUSED.
            permanent_config={
                "server_url": f"{url.hostname}:{url.port}",
                "exchange": peer.exchange,
                "username": url.username,
                "password": WRONG_PASSWORD,
            },
            secrets=[WRONG_PASSWORD, url.password or "guest"],
        )

    async def test_message_carries_metadata(self, case: SinkCase, peer: Peer) -> None:
        publisher = await load_sink("rabbitmq").open(target_of(case, case.raw_config), SETTINGS)
        delivery_id, event, body, messages = await publish_and_read_back(
            publisher, peer.drain, "the message"
        )
        message = messages[0]
        assert message.body == body
        assert message.routing_key == event["type"]
        assert message.message_id == delivery_id
        assert message.content_type == "application/json"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.headers == {
            "event_id": event["id"],
            "event_type": event["type"],
            "created_at": event["created_at"],
        }

    async def test_connection_is_reused(self, case: SinkCase, peer: Peer) -> None:
        publisher = await load_sink("rabbitmq").open(target_of(case, case.raw_config), SETTINGS)
        try:
            for _ in range(3):
                await publisher.publish(*envelope())
            connection = publisher._connection  # type: ignore[attr-defined]
            await publisher.publish(*envelope())
            assert publisher._connection is connection  # type: ignore[attr-defined]

            async def all_four() -> bool:
                return len(await peer.drain()) >= 4

            await eventually(all_four, timeout_s=10, what="4 messages")
        finally:
            await publisher.close()

    @pytest.mark.parametrize(
        ("change", "settings", "match"),
        [
            ({"exchange": "herald-test-no-such-exchange"}, SETTINGS, "404"),
            ({}, Settings(delivery_timeout_s=5), "outbound policy"),
        ],
        ids=["missing-exchange", "refused-address"],
    )
    async def test_more_permanent_failures(
        self, case: SinkCase, change: dict[str, str], settings: Settings, match: str
    ) -> None:
        publisher = await load_sink("rabbitmq").open(
            target_of(case, {**case.raw_config, **change}), settings
        )
        try:
            with pytest.raises(PermanentError, match=match):
                await publisher.publish(*envelope())
            # The next publish on the same publisher fails the same way (no stale channel).
            with pytest.raises(DeliveryError, match=match):
                await publisher.publish(*envelope())
        finally:
            await publisher.close()
