"""Kafka sink conformance against the session's real broker (KRaft, auto-create disabled)."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.settings import Settings
from pipeline.sinks import load_sink
from pipeline.sinks.base import PermanentError
from tests.integration.conftest import Services
from tests.integration.sinks.conformance import (
    SinkCase,
    SinkConformance,
    envelope,
    publish_and_read_back,
    target_of,
)

# A short request timeout keeps the missing-topic case (a full metadata wait) fast.
SETTINGS = Settings(outbound_allowlist=["127.0.0.1/32"], delivery_timeout_s=1.5)
# SASL credentials, distinctive so a leak into a config or an error is unmistakable.
USERNAME = "herald-sasl-user"
PASSWORD = "herald-sasl-password-never-shown-0000"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Peer:
    """A topic of the test's own and a consumer reading it from the start."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )

    async def start(self) -> None:
        await self._consumer.start()

    async def drain(self) -> list[ConsumerRecord[bytes, bytes]]:
        batches = await self._consumer.getmany(timeout_ms=100)
        for batch in batches.values():
            self.records.extend(batch)
        return self.records

    async def stop(self) -> None:
        await self._consumer.stop()


@contextlib.asynccontextmanager
async def kafka_peer(bootstrap: str) -> AsyncIterator[Peer]:
    """A new topic on the broker at `bootstrap` and a consumer reading it from the start."""
    topic = f"herald-test-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    peer = Peer(bootstrap, topic)
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()


@pytest.fixture
async def peer(services: Services) -> AsyncIterator[Peer]:
    async with kafka_peer(services.kafka_bootstrap) as peer:
        yield peer


class TestKafkaSink(SinkConformance):
    @pytest.fixture
    def case(self, services: Services, peer: Peer) -> SinkCase:
        async def received() -> list[bytes]:
            return [record.value for record in await peer.drain() if record.value is not None]

        return SinkCase(
            "kafka",
            SETTINGS,
            raw_config={"bootstrap_servers": services.kafka_bootstrap, "topic": peer.topic},
            received=received,
            retryable_config={
                "bootstrap_servers": f"127.0.0.1:{_closed_port()}",
                "topic": peer.topic,
                "username": USERNAME,
                "password": PASSWORD,
            },
            # The broker does not create topics on demand.
            permanent_config={
                "bootstrap_servers": services.kafka_bootstrap,
                "topic": f"herald-test-missing-{uuid.uuid4().hex[:8]}",
            },
            secrets=[PASSWORD],
            # With credentials the sink speaks SASL over TLS, which the test broker does not
            # offer: a credentialed config never gets as far as the missing topic.
            credential_free=("permanent",),
        )

    async def test_record_carries_key_and_headers(self, case: SinkCase, peer: Peer) -> None:
        publisher = await load_sink("kafka").open(target_of(case, case.raw_config), SETTINGS)
        delivery_id, event, body, records = await publish_and_read_back(
            publisher, peer.drain, "the record"
        )
        record = records[0]
        assert record.value == body
        assert record.key == event["id"].encode()
        assert dict(record.headers) == {
            "delivery_id": delivery_id.encode(),
            "event_id": event["id"].encode(),
            "event_type": event["type"].encode(),
            "created_at": event["created_at"].encode(),
        }

    async def test_producer_is_reused(self, case: SinkCase, peer: Peer) -> None:
        publisher = await load_sink("kafka").open(target_of(case, case.raw_config), SETTINGS)
        try:
            await publisher.publish(*envelope())
            producer = publisher._producer  # type: ignore[attr-defined]
            await publisher.publish(*envelope())
            assert publisher._producer is producer  # type: ignore[attr-defined]
        finally:
            await publisher.close()

    async def test_refused_address_is_permanent(self, case: SinkCase) -> None:
        publisher = await load_sink("kafka").open(
            target_of(case, case.raw_config), Settings(delivery_timeout_s=1.5)
        )
        try:
            with pytest.raises(PermanentError, match="outbound policy"):
                await publisher.publish(*envelope())
        finally:
            await publisher.close()
