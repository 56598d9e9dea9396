"""Sources (issue 18): `herald worker --role ingest` consuming a real Kafka topic and a real
RabbitMQ queue of "the platform's" (on the session's broker and RabbitMQ), delivering to a
real webhook receiver through the session's worker.

The ingest process is this module's own, on a port the extra API processes of other
modules use only while they run. It has three sources: a Kafka topic (default tenant
`dev`), a RabbitMQ queue (the tenant in each record) and a Kafka cluster that does not
exist (with a SASL password that must never show).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2

from api.sources.ingest import SourceReader
from api.sources.kafka import KafkaSourceConsumer
from pipeline.settings import Settings
from pipeline.source_settings import KafkaSource
from pipeline.topics import EVENTS, load_specs
from tests.integration.api_client import Api
from tests.integration.conftest import (
    API_PORT,
    ROOT,
    TEST_DATA,
    Services,
    Stack,
    _wait_ready,
)
from tests.integration.peers import free_port
from tests.integration.test_metrics import delta, scrape
from tests.support import Receiver, eventually

INGEST_PORT = API_PORT + 4
INGEST_LOG = TEST_DATA / "logs" / "ingest.log"
EVENTS_PARTITIONS = {s.name: s.partitions for s in load_specs(Settings().topics_file)}[EVENTS]
OFFLINE_PASSWORD = "sasl-password-that-never-shows"


@dataclass
class Ingest:
    """The module's ingest process and what it consumes."""

    url: str
    topic: str
    queue: str
    rejects: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]

    def restart(self, *, kill: bool) -> None:
        """Stop the process (SIGKILL: a crash) and start another; returns once it is ready."""
        self.stop(kill=kill)
        self.start()

    def start(self) -> None:
        """Start another process in place of the stopped one; returns once it is ready."""
        self.process = _start(self.env)

    def stop(self, *, kill: bool) -> None:
        """Stop the process (SIGKILL: a crash) and wait for it to end."""
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.process.wait(timeout=30)


def ingest_env(stack: Stack, sources: list[dict[str, Any]], **more: str) -> dict[str, str]:
    """The environment of an ingest process on INGEST_PORT reading `sources` (and `more`
    settings); the tests' modules start theirs with it, one module at a time."""
    return {
        **stack.env,
        "HERALD_WORKER_PORT": str(INGEST_PORT),
        "HERALD_SOURCES": json.dumps(sources),
        **more,
    }


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = INGEST_LOG
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(ROOT / ".venv/bin/herald"), "worker", "--role", "ingest"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    _wait_ready(process, INGEST_PORT, log, timeout_s=120)
    return process


async def _create_topics(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=3, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()


async def _declare_queue(amqp_url: str, name: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True)


@pytest.fixture(scope="module")
def ingest(services: Services, stack: Stack) -> Iterator[Ingest]:
    tag = uuid.uuid4().hex[:8]
    topic, queue, rejects = f"platform-orders-{tag}", f"platform-jobs-{tag}", f"rejects-{tag}"
    asyncio.run(_create_topics(services.kafka_bootstrap, topic, rejects))
    asyncio.run(_declare_queue(services.amqp_url, queue))
    sources = [
        {
            "name": "orders",
            "type": "kafka",
            "bootstrap_servers": services.kafka_bootstrap,
            "topic": topic,
            "default_tenant": "dev",
            "max_batch": 100,
        },
        {"name": "jobs", "type": "rabbitmq", "url": services.amqp_url, "queue": queue},
        {
            "name": "offline",
            "type": "kafka",
            "bootstrap_servers": f"127.0.0.1:{free_port()}",
            "topic": "nowhere",
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "herald",
            "sasl_password": OFFLINE_PASSWORD,
        },
    ]
    env = ingest_env(stack, sources, HERALD_SOURCES_REJECTS_TOPIC=rejects)
    INGEST_LOG.unlink(missing_ok=True)
    state = Ingest(f"http://127.0.0.1:{INGEST_PORT}", topic, queue, rejects, env, _start(env))
    try:
        yield state
    finally:
        state.process.terminate()
        state.process.wait(timeout=30)


@pytest.fixture
async def platform_topic(services: Services) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def _send(
    producer: AIOKafkaProducer, topic: str, *values: Any, key: bytes | None = None
) -> None:
    for value in values:
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        await producer.send_and_wait(topic, raw, key=key)


def _event_type() -> str:
    return f"source_{uuid.uuid4().hex[:10]}.created"


async def test_kafka_records_are_delivered_end_to_end(
    ingest: Ingest, platform_topic: AIOKafkaProducer, api: Api, receiver: Receiver
) -> None:
    event_type = _event_type()
    await api.create_webhook(f"{receiver.url}/k", [event_type])
    before = await scrape(ingest.url)
    records = [{"type": event_type, "data": {"n": n}} for n in range(30)]
    await _send(platform_topic, ingest.topic, *records)

    await eventually(lambda: len(receiver.bodies("/k")) >= 30, what="30 deliveries")
    bodies = receiver.bodies("/k")
    assert sorted(b["data"]["n"] for b in bodies) == list(range(30))
    assert {b["type"] for b in bodies} == {event_type}
    after = await scrape(ingest.url)
    ingested = delta(before, after, "herald_source_records_total", source="orders")
    assert ingested >= 30


async def test_rabbitmq_messages_are_delivered_with_their_tenant(
    ingest: Ingest, services: Services, api: Api, receiver: Receiver
) -> None:
    event_type = _event_type()
    await api.create_webhook(f"{receiver.url}/r", [event_type])
    connection = await aio_pika.connect(services.amqp_url)
    async with connection:
        channel = await connection.channel()
        for n in range(20):
            body = orjson.dumps({"tenant": "dev", "type": event_type, "data": {"n": n}})
            await channel.default_exchange.publish(aio_pika.Message(body), routing_key=ingest.queue)

        await eventually(lambda: len(receiver.bodies("/r")) >= 20, what="20 deliveries")
        assert sorted(b["data"]["n"] for b in receiver.bodies("/r")) == list(range(20))
        # Acknowledged once durable: nothing is left in the queue, nor unacknowledged.
        queue = await channel.declare_queue(ingest.queue, passive=True)
        assert queue.declaration_result.message_count == 0


async def _read_all(bootstrap: str, topic: str, count: int = 3) -> list[dict[str, Any]]:
    """Every record of `topic` (`count` partitions) up to its end now, decoded."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[dict[str, Any]] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                found += [orjson.loads(r.value) for r in records]
        return found
    finally:
        await consumer.stop()


async def test_invalid_records_are_rejected_with_their_field_names_and_counted(
    ingest: Ingest,
    services: Services,
    platform_topic: AIOKafkaProducer,
    api: Api,
    receiver: Receiver,
) -> None:
    event_type = _event_type()
    await api.create_webhook(f"{receiver.url}/bad", [event_type])
    before = await scrape(ingest.url)
    marker = uuid.uuid4().hex
    invalid = [
        b"{not json " + marker.encode(),
        {"type": "Not A Type", "data": [marker], "colour": "red"},
        {"tenant": f"nobody-{marker}", "type": event_type, "data": {}},
        {"type": event_type, "data": {"m": marker, "big": "x" * Settings().max_event_bytes}},
    ]
    # One partition (one key): the valid record after them is ingested after them.
    await _send(
        platform_topic,
        ingest.topic,
        *invalid,
        {"type": event_type, "data": {"ok": marker}},
        key=b"k",
    )
    await eventually(
        lambda: receiver.bodies("/bad"), what="the valid record after the invalid ones"
    )
    assert [b["data"] for b in receiver.bodies("/bad")] == [{"ok": marker}]

    async def mine() -> list[dict[str, Any]]:
        found = await _read_all(services.kafka_bootstrap, ingest.rejects)
        return [r for r in found if marker in r["record"][:200]]

    rejects = await eventually(lambda: _four(mine()), what="four rejects")
    by_reason = {r["reason"]: r for r in rejects}
    assert set(by_reason) == {"not_json", "invalid", "tenant"}, rejects
    assert [r["source"] for r in rejects] == ["orders"] * 4
    assert {r["position"]["topic"] for r in rejects} == {ingest.topic}
    shape = by_reason["not_json"]["error"]
    assert (shape["status"], list(shape["errors"])) == (400, ["body"])
    invalid_errors = [r["error"]["errors"] for r in rejects if r["reason"] == "invalid"]
    assert sorted(map(sorted, invalid_errors)) == [["colour", "data", "type"], ["data"]]
    assert list(by_reason["tenant"]["error"]["errors"]) == ["tenant"]
    big = next(r for r in rejects if r["record_truncated"])
    assert list(big["error"]["errors"]) == ["data"]

    after = await scrape(ingest.url)
    for reason, count in (("not_json", 1), ("invalid", 2), ("tenant", 1)):
        moved = delta(before, after, "herald_source_rejects_total", source="orders", reason=reason)
        assert moved == count, reason


async def _four(found: Any) -> Any:
    records = await found
    return records if len(records) >= 4 else None


def _same_events_partition(event_id: str, tag: str) -> str:
    """A publisher-chosen id that the API's path puts in `event_id`'s `events` partition."""
    count = EVENTS_PARTITIONS
    target = (murmur2(event_id.encode()) & 0x7FFFFFFF) % count
    n = 0
    while (murmur2(f"evt_{tag}_{n}".encode()) & 0x7FFFFFFF) % count != target:
        n += 1
    return f"evt_{tag}_{n}"


async def test_a_publisher_chosen_id_is_delivered_once(
    ingest: Ingest, platform_topic: AIOKafkaProducer, api: Api, receiver: Receiver
) -> None:
    event_type, tag = _event_type(), uuid.uuid4().hex[:8]
    await api.create_webhook(f"{receiver.url}/once", [event_type])
    event_id = f"evt_{tag}"
    sentinel = _same_events_partition(event_id, f"{tag}s")
    record = {"id": event_id, "type": event_type, "data": {"copy": 1}}
    await _send(platform_topic, ingest.topic, record, {**record, "data": {"copy": 2}}, key=b"once")
    await _send(
        platform_topic, ingest.topic, {"id": sentinel, "type": event_type, "data": {}}, key=b"once"
    )
    # The copies and the sentinel go through one events partition in order: the router has
    # seen both copies once the sentinel is delivered.
    await eventually(
        lambda: sentinel in [b["id"] for b in receiver.bodies("/once")], what="sentinel"
    )
    delivered = [b["id"] for b in receiver.bodies("/once")]
    assert sorted(delivered) == sorted([event_id, sentinel])


async def test_an_unreachable_source_is_named_in_readyz_and_ingest_goes_on(
    ingest: Ingest, stack: Stack
) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{ingest.url}/readyz") as response:
        text = await response.text()
        assert response.status == 200, text  # degraded, still serving the other sources
        body = json.loads(text)
    assert body["status"] == "degraded"
    assert body["checks"] == {
        "kafka": "ok",
        "source:orders": "ok",
        "source:jobs": "ok",
        "source:offline": "degraded",
    }
    log = INGEST_LOG.read_text()
    assert "source offline failed" in log
    assert OFFLINE_PASSWORD not in log and OFFLINE_PASSWORD not in text


async def test_a_killed_ingest_process_loses_nothing(
    ingest: Ingest, services: Services, platform_topic: AIOKafkaProducer
) -> None:
    event_type = _event_type()
    committed_before = await _committed(services.kafka_bootstrap, ingest.topic)
    before = await scrape(ingest.url)
    total = 10_000
    await _send_many(platform_topic, ingest.topic, event_type, total)

    # Killed in the steady stream, not between the first batches: a commit made before the
    # produce it covers would show only there (the RabbitMQ kill test found the same).
    async def ingesting() -> bool:
        after = await scrape(ingest.url)
        return delta(before, after, "herald_source_records_total", source="orders") >= total // 5

    async def numbers() -> set[int]:
        events = await _read_all(services.kafka_bootstrap, EVENTS, EVENTS_PARTITIONS)
        return {e["data"]["n"] for e in events if e["type"] == event_type}

    await eventually(ingesting, timeout_s=60, what="a fifth of the records ingested")
    ingest.stop(kill=True)
    committed = await _committed(services.kafka_bootstrap, ingest.topic) - committed_before
    in_events = len(await numbers())
    # Killed mid-stream (else this test shows nothing): some records were not committed;
    # and none committed that is not in `events`.
    assert committed < total
    assert in_events >= committed, (committed, in_events)
    ingest.start()

    # Every record is in `events` (what is there is delivered: the other tests show that).
    await eventually(lambda: _all_of(numbers(), total), timeout_s=60, what="every record in events")


async def _all_of(numbers: Any, total: int) -> bool:
    return await numbers == set(range(total))


class _HoldingIngester:
    """Stands in for the Ingester (Herald's `events` is beside the point here): records each
    batch, and holds the first one, as a produce not yet acknowledged, until released."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.release = asyncio.Event()

    async def ingest(self, reader: SourceReader, records: list[Any]) -> None:
        self.batches.append(list(records))
        if len(self.batches) == 1:
            await self.release.wait()


async def test_offsets_are_committed_only_once_their_batch_is_durable(
    services: Services, platform_topic: AIOKafkaProducer
) -> None:
    # Deterministic where the kill test is a matter of timing: while the first batch is not
    # durable, the consumer fetches the next one; a commit made before the produce it covers
    # would show here. A real consumer and broker; the ingester stands in (it says so).
    topic, group = f"platform-held-{uuid.uuid4().hex[:8]}", f"held-{uuid.uuid4().hex[:8]}"
    await _create_topics(services.kafka_bootstrap, topic)
    total = 60
    await _send_many(platform_topic, topic, _event_type(), total)
    source = KafkaSource(
        name="held", type="kafka", bootstrap_servers=services.kafka_bootstrap, topic=topic,
        group_id=group, max_batch=10, default_tenant="held",
    )  # fmt: skip
    ingester = _HoldingIngester()
    run = asyncio.create_task(KafkaSourceConsumer(source, ingester).run())

    def batches(count: int) -> bool:
        if run.done():
            run.result()  # the consumer gave up: its error fails the test
        return len(ingester.batches) >= count

    try:
        await eventually(lambda: batches(2), what="the next batch fetched under the held one")
        assert await _committed(services.kafka_bootstrap, topic, group) == 0
        ingester.release.set()

        async def all_committed() -> bool:
            return await _committed(services.kafka_bootstrap, topic, group) == total

        await eventually(all_committed, what="every batch committed once released")
        assert sum(len(batch) for batch in ingester.batches) == total  # each record once
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run


async def _committed(bootstrap: str, topic: str, group: str = "herald-source-orders") -> int:
    """A source's committed offsets on `topic` (the orders source's unless `group`), summed
    over its partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


async def _send_many(producer: AIOKafkaProducer, topic: str, event_type: str, count: int) -> None:
    futures = [
        await producer.send(topic, orjson.dumps({"type": event_type, "data": {"n": n}}))
        for n in range(count)
    ]
    await asyncio.gather(*futures)
