"""AWS S3 sink conformance against moto's server on 127.0.0.1 (a real S3 API)."""

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


def _objects(aws: Aws, bucket: str) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    """Every object in the bucket, oldest first: its key, body, content type and metadata."""
    s3 = aws.client("s3")

    def read() -> list[dict[str, Any]]:
        listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        objects = []
        for item in sorted(listed, key=lambda o: o["LastModified"]):
            got = s3.get_object(Bucket=bucket, Key=item["Key"])
            objects.append({**got, "Key": item["Key"], "Body": got["Body"].read()})
        return objects

    async def received() -> list[dict[str, Any]]:
        return await asyncio.to_thread(read)

    return received


class TestS3Sink(SinkConformance):
    @pytest.fixture
    def case(self, aws: Aws) -> SinkCase:
        bucket = f"herald-{uuid.uuid4().hex}"
        aws.client("s3").create_bucket(Bucket=bucket)
        objects = _objects(aws, bucket)

        async def received() -> list[bytes]:
            return [o["Body"] for o in await objects()]

        # One alias and one canonical name: access_key with secret.
        config = {
            "bucket": bucket,
            "region": aws.region,
            "prefix": "events/",
            "access_key": aws.key_id,
            "secret": aws.secret,
        }
        return SinkCase(
            "aws_s3",
            aws.settings,
            raw_config=config,
            received=received,
            retryable_config=config,
            permanent_config={**config, "bucket": f"herald-missing-{uuid.uuid4().hex}"},
            secrets=[aws.key_id, aws.secret],
            retryable_settings=aws.unreachable_settings,
        )

    async def test_one_object_per_event_under_its_hour(self, case: SinkCase, aws: Aws) -> None:
        publisher = await load_sink("aws_s3").open(target_of(case, case.raw_config), case.settings)
        delivery_id, event, body = envelope()
        try:
            await publisher.publish(delivery_id, event, body)
            await publisher.publish(delivery_id, event, body)  # a redelivery overwrites it
        finally:
            await publisher.close()
        objects = await eventually(
            _objects(aws, case.raw_config["bucket"]), timeout_s=10, what="the object"
        )
        assert len(objects) == 1
        # envelope() stamps created_at 2026-01-01T00:00:00.000Z.
        assert objects[0]["Key"] == f"events/2026/01/01/00/{event['id']}.json"
        assert objects[0]["ContentType"] == "application/json"
        assert objects[0]["Metadata"] == {
            "herald-event-id": event["id"],
            "herald-event-type": event["type"],
            "herald-delivery-id": delivery_id,
            "herald-created-at": event["created_at"],
        }
