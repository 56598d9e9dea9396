"""AWS EventBridge sink: one PutEvents entry per delivery, the envelope as its Detail."""

from __future__ import annotations

import re
from typing import Any

from pipeline.settings import Settings
from pipeline.sinks.aws_common import (
    ACCESS_KEY_ID_AND_SECRET,
    AwsClient,
    AwsClients,
    credentials,
    error_for_code,
    matching,
    region,
    result,
)
from pipeline.sinks.base import (
    Config,
    Credentials,
    DeliveryError,
    DeliveryResult,
    EventRejected,
    Publisher,
    Target,
)
from pipeline.sinks.fields import FieldErrors, config_object, unknown_fields

# A bus name, or a bus ARN (for a bus in another account).
EVENT_BUS = re.compile(
    r"^(?:arn:aws[a-z-]*:events:[a-z0-9-]+:[0-9]{12}:event-bus/)?[A-Za-z0-9/._-]{1,256}$"
)


# PutEvents' limits: Herald accepts event types up to 200 characters and events whose
# envelope can pass 256 KB, so an event can break them while the destination is fine.
MAX_DETAIL_TYPE_CHARS = 128
MAX_ENTRY_BYTES = 256 * 1024
TIME_FIELD_BYTES = 14  # what AWS counts for an entry's Time, set or not


def entry_refusal(entry: dict[str, str]) -> EventRejected | None:
    """Why PutEvents would refuse this entry for the event's own sake, or None."""
    if len(entry["DetailType"]) > MAX_DETAIL_TYPE_CHARS:
        return EventRejected(
            f"the event type is longer than the {MAX_DETAIL_TYPE_CHARS} characters "
            "EventBridge takes as DetailType"
        )
    size = TIME_FIELD_BYTES + sum(
        len(entry[field].encode()) for field in ("Source", "DetailType", "Detail")
    )
    if size > MAX_ENTRY_BYTES:
        return EventRejected(
            f"the event makes a {size}-byte entry; EventBridge takes at most {MAX_ENTRY_BYTES}"
        )
    return None


def entry_failure(response: dict[str, Any]) -> DeliveryError | None:
    """The error for a PutEvents call that failed its one entry, or None if it went in.

    PutEvents answers 200 even when an entry is refused; FailedEntryCount says so, and
    the entry's ErrorCode says whether trying again can help.
    """
    if not response.get("FailedEntryCount"):
        return None
    entries = response.get("Entries") or [{}]
    return error_for_code("events", entries[0].get("ErrorCode"), None)


class EventBridgePublisher:
    """Puts events on one bus."""

    def __init__(self, client: AwsClient, target: Target, source: str) -> None:
        self._client = client
        self._event_bus_name: str = target.config["event_bus_name"]
        self._source = source

    async def publish(self, delivery_id: str, event: dict[str, Any], body: bytes) -> DeliveryResult:
        """PutEvents with the event type as DetailType and the envelope, as sent, as Detail."""
        entry = {
            "EventBusName": self._event_bus_name,
            "Source": self._source,
            "DetailType": str(event.get("type") or "herald.event"),
            "Detail": body.decode("utf-8"),
        }
        refusal = entry_refusal(entry)
        if refusal is not None:
            raise refusal
        response = await self._client.call("put_events", Entries=[entry])
        failure = entry_failure(response)
        if failure is not None:
            raise failure
        entries = response.get("Entries") or [{}]
        return result(response, event_id=entries[0].get("EventId"))

    async def close(self) -> None:
        """Close the destination's client; calling it twice is harmless."""
        await self._client.close()


class EventBridgeSink:
    """aws_eventbridge: `event_bus_name`, `region`, `access_key_id`, `secret_access_key`
    (no aliases, as the contract says)."""

    type = "aws_eventbridge"

    def __init__(self) -> None:
        self._clients = AwsClients("events")

    def validate(
        self, raw: Any, errors: FieldErrors, path: str, settings: Settings
    ) -> tuple[Config, Credentials]:
        """Shape only: a bus name or ARN, a region and the key pair."""
        raw = config_object(errors, raw, path, self.type)
        known = ("event_bus_name", "region", *ACCESS_KEY_ID_AND_SECRET.names)
        unknown_fields(errors, raw, path, known)
        config: Config = {
            "event_bus_name": matching(
                errors,
                raw,
                path,
                "event_bus_name",
                EVENT_BUS,
                "an event bus name or ARN",
            ),
            "region": region(errors, raw, path),
        }
        return config, credentials(errors, raw, path, ACCESS_KEY_ID_AND_SECRET, settings)

    async def open(self, target: Target, settings: Settings) -> Publisher:
        """A publisher with its own client for the bus's region."""
        client = await self._clients.open(
            target.config["region"],
            ACCESS_KEY_ID_AND_SECRET.key_pair(target.credentials),
            settings,
        )
        return EventBridgePublisher(client, target, settings.eventbridge_source)

    async def aclose(self) -> None:
        """Stop the sink's threads."""
        await self._clients.aclose()


SINK = EventBridgeSink()
