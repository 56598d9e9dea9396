"""One event, one subscribed destination of every type, through the whole stack: the API,
the router, the worker's sinks, and a real peer per type that receives the event.

Peers: a local HTTP receiver (webhook); moto's server (SQS, Kinesis, S3, and EventBridge,
whose rule forwards to an SQS queue); RabbitMQ; the test broker (Herald's `kafka` type);
the session's Pub/Sub Publisher gRPC server and Hookdeck endpoint (tests/integration/peers.py).

Azure Service Bus is the one type not here: no Service Bus server (nor its emulator, a
Docker image) runs on this machine, and the worker is a separate process whose SDK cannot
be faked from the test, so it is tested at the SDK boundary in
tests/integration/sinks/test_azure_servicebus.py only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from pipeline.ids import new_id
from tests.integration.api_client import Api
from tests.integration.conftest import Services
from tests.integration.peers import Peers
from tests.integration.sinks.conftest import Aws
from tests.integration.sinks.test_gcp_pubsub import service_account
from tests.integration.sinks.test_kafka import kafka_peer
from tests.integration.sinks.test_rabbitmq import rabbitmq_peer
from tests.support import Receiver, eventually

# Reads what a peer has received so far: the delivered event envelopes.
Reader = Callable[[], Awaitable[list[dict[str, Any]]]]


def _aws_destinations(aws: Aws) -> dict[str, tuple[dict[str, Any], Reader]]:
    """Config and reader for each AWS type, on fresh resources in moto."""
    name = f"herald-e2e-{uuid.uuid4().hex[:12]}"
    credentials = {"region": aws.region, "access_key": aws.key_id, "secret_key": aws.secret}

    queue_url, _ = aws.new_queue(name)
    sqs_messages = aws.queue_messages(queue_url)

    async def sqs() -> list[dict[str, Any]]:
        return [json.loads(m["Body"]) for m in await sqs_messages()]

    kinesis = aws.client("kinesis")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
    )

    def kinesis_records() -> list[dict[str, Any]]:
        shard = kinesis.list_shards(StreamName=name)["Shards"][0]["ShardId"]
        iterator = kinesis.get_shard_iterator(
            StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = kinesis.get_records(ShardIterator=iterator, Limit=100)["Records"]
        return [json.loads(r["Data"]) for r in records]

    s3 = aws.client("s3")
    s3.create_bucket(Bucket=name)

    def s3_objects() -> list[dict[str, Any]]:
        listed = s3.list_objects_v2(Bucket=name).get("Contents", [])
        return [json.loads(s3.get_object(Bucket=name, Key=o["Key"])["Body"].read()) for o in listed]

    events = aws.client("events")
    events.create_event_bus(Name=name)
    bus_queue_url, bus_queue_arn = aws.new_queue(f"{name}-bus")
    source = aws.settings.eventbridge_source
    events.put_rule(Name="all", EventBusName=name, EventPattern=json.dumps({"source": [source]}))
    events.put_targets(Rule="all", EventBusName=name, Targets=[{"Id": "q", "Arn": bus_queue_arn}])
    bus_messages = aws.queue_messages(bus_queue_url)

    async def eventbridge() -> list[dict[str, Any]]:
        return [json.loads(m["Body"])["detail"] for m in await bus_messages()]

    return {
        "aws_sqs": ({"queue_url": queue_url, **credentials}, sqs),
        "aws_kinesis": (
            {"stream_name": name, **credentials},
            lambda: asyncio.to_thread(kinesis_records),
        ),
        "aws_s3": ({"bucket": name, **credentials}, lambda: asyncio.to_thread(s3_objects)),
        # EventBridge's reference names have no short aliases.
        "aws_eventbridge": (
            {
                "event_bus_name": name,
                "region": aws.region,
                "access_key_id": aws.key_id,
                "secret_access_key": aws.secret,
            },
            eventbridge,
        ),
    }


@pytest.fixture
async def rabbitmq(services: Services) -> AsyncIterator[tuple[dict[str, Any], Reader]]:
    async with rabbitmq_peer(services.amqp_url) as peer:

        async def read() -> list[dict[str, Any]]:
            return [orjson.loads(m.body) for m in await peer.drain()]

        yield {"server_url": services.amqp_url, "exchange": peer.exchange}, read


@pytest.fixture
async def kafka_topic(services: Services) -> AsyncIterator[tuple[dict[str, Any], Reader]]:
    async with kafka_peer(services.kafka_bootstrap) as peer:

        async def read() -> list[dict[str, Any]]:
            return [orjson.loads(r.value) for r in await peer.drain() if r.value is not None]

        yield {"bootstrap_servers": services.kafka_bootstrap, "topic": peer.topic}, read


async def _everywhere(
    destinations: dict[str, tuple[dict[str, Any], Reader]], event_id: str
) -> dict[str, dict[str, Any]]:
    """The envelope of `event_id` as each peer received it, once every peer has; the test
    fails naming the types it never reached."""
    got: dict[str, dict[str, Any]] = {}

    async def complete() -> bool:
        for destination_type, (_, read) in destinations.items():
            mine = [e for e in await read() if e.get("id") == event_id]
            if mine:
                got[destination_type] = mine[0]
        return got.keys() == destinations.keys()

    try:
        await eventually(complete, timeout_s=60, interval_s=0.5, what="the event at every peer")
    except AssertionError:
        raise AssertionError(f"not delivered to {sorted(destinations.keys() - got)}") from None
    return got


async def test_one_event_reaches_a_destination_of_every_type(
    api: Api,
    receiver: Receiver,
    peers: Peers,
    rabbitmq: tuple[dict[str, Any], Reader],
    kafka_topic: tuple[dict[str, Any], Reader],
) -> None:
    aws = Aws(peers.aws_url)
    source = f"src_{uuid.uuid4().hex[:10]}"
    hookdeck_path = f"/{source}"
    project, topic = "herald-e2e", f"events-{uuid.uuid4().hex[:8]}"

    async def webhook() -> list[dict[str, Any]]:
        return receiver.bodies("/every-type")

    async def pubsub() -> list[dict[str, Any]]:
        return [
            orjson.loads(m.data)
            for m in peers.pubsub.messages(f"projects/{project}/topics/{topic}")
        ]

    async def hookdeck() -> list[dict[str, Any]]:
        return [orjson.loads(r.body) for r in peers.hookdeck.requests() if r.path == hookdeck_path]

    token = base64.b64encode(f"{source}:k3y-e2e".encode()).decode()
    destinations: dict[str, tuple[dict[str, Any], Reader]] = {
        "webhook": ({"url": f"{receiver.url}/every-type"}, webhook),
        **_aws_destinations(aws),
        "gcp_pubsub": (
            {
                "project_id": project,
                "topic": topic,
                "credentials_json": orjson.dumps(service_account()).decode(),
            },
            pubsub,
        ),
        "rabbitmq": rabbitmq,
        "hookdeck": ({"token": token}, hookdeck),
        "kafka": kafka_topic,
    }
    event_type = f"every_type.{new_id('t_').lower()}"
    for destination_type, (config, _) in destinations.items():
        status, body = await api.call(
            "POST",
            "/v2/event-destinations",
            {
                "name": f"e2e {destination_type}",
                "type": destination_type,
                destination_type: config,
                "events": [event_type],
            },
        )
        assert status == 201, (destination_type, body)

    event_id = await api.publish(event_type, {"hello": "every type"})

    got = await _everywhere(destinations, event_id)
    for destination_type, envelope in got.items():
        assert (envelope["type"], envelope["data"]) == (
            event_type,
            {"hello": "every type"},
        ), destination_type
