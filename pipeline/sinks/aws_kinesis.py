"""AWS Kinesis sink: one PutRecord per delivery, partitioned by event id by default."""

from __future__ import annotations

import re
from typing import Any

from pipeline.settings import Settings
from pipeline.sinks.aws_common import (
    KEY_AND_SECRET,
    AwsClient,
    AwsClients,
    credentials,
    matching,
    region,
    result,
)
from pipeline.sinks.base import Config, Credentials, DeliveryResult, Publisher, Target
from pipeline.sinks.fields import FieldErrors, config_object, unknown_fields

STREAM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
PARTITION_KEY = re.compile(r"^.{1,256}$", re.DOTALL)


class KinesisPublisher:
    """Puts records on one stream."""

    def __init__(self, client: AwsClient, target: Target) -> None:
        self._client = client
        self._stream_name: str = target.config["stream_name"]
        self._partition_key: str | None = target.config.get("partition_key")

    async def publish(self, delivery_id: str, event: dict[str, Any], body: bytes) -> DeliveryResult:
        """PutRecord of the envelope; the key is the configured one, else the event id
        (so one event's redeliveries land on one shard)."""
        response = await self._client.call(
            "put_record",
            StreamName=self._stream_name,
            Data=body,
            PartitionKey=self._partition_key or str(event.get("id") or delivery_id),
        )
        return result(
            response,
            shard_id=response.get("ShardId"),
            sequence_number=response.get("SequenceNumber"),
        )

    async def close(self) -> None:
        """Close the destination's client; calling it twice is harmless."""
        await self._client.close()


class KinesisSink:
    """aws_kinesis: `stream_name`, `region`, `key`/`access_key`, `secret`/`secret_key`;
    Herald adds an optional fixed `partition_key`."""

    type = "aws_kinesis"

    def __init__(self) -> None:
        self._clients = AwsClients("kinesis")

    def validate(
        self, raw: Any, errors: FieldErrors, path: str, settings: Settings
    ) -> tuple[Config, Credentials]:
        """Shape only: a stream name, a region and the key pair."""
        raw = config_object(errors, raw, path, self.type)
        known = ("stream_name", "region", "partition_key", *KEY_AND_SECRET.names)
        unknown_fields(errors, raw, path, known)
        config: Config = {
            "stream_name": matching(
                errors,
                raw,
                path,
                "stream_name",
                STREAM_NAME,
                "a Kinesis stream name (1 to 128 letters, digits, '_', '-' or '.')",
            ),
            "region": region(errors, raw, path),
        }
        partition_key = matching(
            errors,
            raw,
            path,
            "partition_key",
            PARTITION_KEY,
            "at most 256 characters",
            required=False,
        )
        if partition_key is not None:
            config["partition_key"] = partition_key
        return config, credentials(errors, raw, path, KEY_AND_SECRET, settings)

    async def open(self, target: Target, settings: Settings) -> Publisher:
        """A publisher with its own client for the stream's region."""
        client = await self._clients.open(
            target.config["region"], KEY_AND_SECRET.key_pair(target.credentials), settings
        )
        return KinesisPublisher(client, target)

    async def aclose(self) -> None:
        """Stop the sink's threads."""
        await self._clients.aclose()


SINK = KinesisSink()
