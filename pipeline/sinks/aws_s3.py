"""AWS S3 sink: one object per event, under `<prefix>/YYYY/MM/DD/HH/<event id>.json`."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pipeline.settings import Settings
from pipeline.sinks.aws_common import (
    KEY_AND_SECRET,
    AwsClient,
    AwsClients,
    credentials,
    matching,
    metadata,
    region,
    result,
)
from pipeline.sinks.base import Config, Credentials, DeliveryResult, Publisher, Target
from pipeline.sinks.fields import FieldErrors, config_object, string, unknown_fields

# S3's rules for new buckets: 3-63 lowercase letters, digits, dots and hyphens.
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# One '/'-separated part of a key prefix: S3's "safe" characters (no '.' or '..' parts).
PREFIX_PART = re.compile(r"^[A-Za-z0-9!_.*'()=-]+$")
MAX_PREFIX = 512


def object_key(prefix: str | None, delivery_id: str, event: dict[str, Any]) -> str:
    """Where an event's object goes. The hour is the event's creation time, so every
    redelivery of one event overwrites the same object."""
    created = _created_at(event.get("created_at"))
    name = f"{created:%Y/%m/%d/%H}/{event.get('id') or delivery_id}.json"
    return f"{prefix}/{name}" if prefix else name


def _created_at(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


def _prefix(errors: FieldErrors, raw: dict[str, Any], path: str) -> str | None:
    """The optional key prefix, without the leading or trailing '/' people often write."""
    prefix = string(errors, raw, path, "prefix", required=False, max_length=MAX_PREFIX)
    if prefix is None:
        return None
    parts = prefix.strip("/").split("/")
    if not all(PREFIX_PART.match(part) and part not in (".", "..") for part in parts):
        errors.add(
            f"{path}.prefix",
            "must be '/'-separated parts of letters, digits and !_.*'()=- "
            "(no empty, '.' or '..' parts).",
        )
        return None
    return "/".join(parts)


class S3Publisher:
    """Writes objects to one bucket."""

    def __init__(self, client: AwsClient, target: Target) -> None:
        self._client = client
        self._bucket: str = target.config["bucket"]
        self._prefix: str | None = target.config.get("prefix")

    async def publish(self, delivery_id: str, event: dict[str, Any], body: bytes) -> DeliveryResult:
        """PutObject of the envelope as JSON, the delivery's identity in its metadata."""
        key = object_key(self._prefix, delivery_id, event)
        response = await self._client.call(
            "put_object",
            Bucket=self._bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            Metadata=metadata(delivery_id, event),
        )
        return result(response, key=key, etag=response.get("ETag"))

    async def close(self) -> None:
        """Close the destination's client; calling it twice is harmless."""
        await self._client.close()


class S3Sink:
    """aws_s3: `bucket`, `region`, `key`/`access_key`, `secret`/`secret_key`; Herald adds
    an optional key `prefix`."""

    type = "aws_s3"

    def __init__(self) -> None:
        self._clients = AwsClients("s3")

    def validate(
        self, raw: Any, errors: FieldErrors, path: str, settings: Settings
    ) -> tuple[Config, Credentials]:
        """Shape only: a bucket name, a region, an optional prefix and the key pair."""
        raw = config_object(errors, raw, path, self.type)
        unknown_fields(errors, raw, path, ("bucket", "region", "prefix", *KEY_AND_SECRET.names))
        config: Config = {
            "bucket": matching(
                errors,
                raw,
                path,
                "bucket",
                BUCKET,
                "an S3 bucket name (3 to 63 lowercase letters, digits, '.' or '-')",
            ),
            "region": region(errors, raw, path),
        }
        prefix = _prefix(errors, raw, path)
        if prefix is not None:
            config["prefix"] = prefix
        return config, credentials(errors, raw, path, KEY_AND_SECRET, settings)

    async def open(self, target: Target, settings: Settings) -> Publisher:
        """A publisher with its own client for the bucket's region."""
        # Emulators (moto, LocalStack) serve buckets by path, not by virtual host.
        addressing = "path" if settings.aws_endpoint_url else "auto"
        client = await self._clients.open(
            target.config["region"],
            KEY_AND_SECRET.key_pair(target.credentials),
            settings,
            s3={"addressing_style": addressing},
        )
        return S3Publisher(client, target)

    async def aclose(self) -> None:
        """Stop the sink's threads."""
        await self._clients.aclose()


SINK = S3Sink()
