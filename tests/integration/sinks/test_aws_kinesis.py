"""AWS Kinesis sink conformance against moto's server on 127.0.0.1 (a real Kinesis API)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pipeline.sinks import load_sink
from tests.integration.sinks.conformance import SinkCase, SinkConformance, envelope, target_of
from tests.integration.sinks.conftest import Aws
from tests.support import eventually


def _records(aws: Aws, stream_name: str) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    """Every record on the stream, read from the start of each shard."""
    kinesis = aws.client("kinesis")

    def read() -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for shard in kinesis.list_shards(StreamName=stream_name)["Shards"]:
            iterator = kinesis.get_shard_iterator(
                StreamName=stream_name,
                ShardId=shard["ShardId"],
                ShardIteratorType="TRIM_HORIZON",
            )["ShardIterator"]
            records.extend(kinesis.get_records(ShardIterator=iterator, Limit=1000)["Records"])
        return records

    async def received() -> list[dict[str, Any]]:
        return await asyncio.to_thread(read)

    return received


def _stream(aws: Aws) -> str:
    name = f"herald-{uuid.uuid4().hex}"
    kinesis = aws.client("kinesis")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
    )
    return name


def _config(aws: Aws, stream_name: str, **extra: str) -> dict[str, Any]:
    # The canonical names (key, secret).
    return {
        "stream_name": stream_name,
        "region": aws.region,
        "key": aws.key_id,
        "secret": aws.secret,
        **extra,
    }


class TestKinesisSink(SinkConformance):
    @pytest.fixture
    def case(self, aws: Aws) -> SinkCase:
        stream_name = _stream(aws)
        records = _records(aws, stream_name)

        async def received() -> list[bytes]:
            return [r["Data"] for r in await records()]

        config = _config(aws, stream_name)
        return SinkCase(
            "aws_kinesis",
            aws.settings,
            raw_config=config,
            received=received,
            retryable_config=config,
            permanent_config={**config, "stream_name": f"herald-missing-{uuid.uuid4().hex}"},
            secrets=[aws.key_id, aws.secret],
            retryable_settings=aws.unreachable_settings,
        )

    async def test_partition_key_is_the_event_id(self, case: SinkCase, aws: Aws) -> None:
        key, event = await _publish_one(aws, case, case.raw_config)
        assert key == event["id"]

    async def test_a_configured_partition_key_wins(self, case: SinkCase, aws: Aws) -> None:
        key, _ = await _publish_one(aws, case, {**case.raw_config, "partition_key": "tenant-7"})
        assert key == "tenant-7"


async def _publish_one(aws: Aws, case: SinkCase, raw: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Publish one event with `raw` as the config; the record's partition key, and the event."""
    publisher = await load_sink("aws_kinesis").open(target_of(case, raw), case.settings)
    _, event, body = envelope()
    try:
        await publisher.publish("evdl_x", event, body)
    finally:
        await publisher.close()
    records = await eventually(_records(aws, raw["stream_name"]), timeout_s=10, what="the record")
    return str(records[0]["PartitionKey"]), event
