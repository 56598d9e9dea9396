"""AWS SQS sink: one SendMessage per delivery, the event envelope as the message body."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pipeline.settings import Settings
from pipeline.sinks.aws_common import (
    KEY_AND_SECRET,
    REGION,
    AwsClient,
    AwsClients,
    credentials,
    matching,
    metadata,
    region,
    result,
)
from pipeline.sinks.base import (
    Config,
    Credentials,
    DeliveryResult,
    EventRejected,
    Publisher,
    Target,
)
from pipeline.sinks.fields import FieldErrors, config_object, http_url, unknown_fields

# /<account id>/<queue name>, as every SQS queue URL's path is.
QUEUE_PATH = re.compile(r"^/[0-9]{12}/(?=[^/]{1,80}$)[A-Za-z0-9_-]+(\.fifo)?$")
# sqs.<region>.amazonaws.com, VPC endpoints (….sqs.<region>.vpce.amazonaws.com) and the
# legacy <region>.queue.amazonaws.com; queue.amazonaws.com alone is us-east-1.
REGION_HOSTS = (
    re.compile(r"(?:^|\.)sqs\.([a-z0-9-]+)\.(?:vpce\.)?amazonaws\.com(?:\.cn)?$"),
    re.compile(r"^([a-z0-9-]+)\.queue\.amazonaws\.com(?:\.cn)?$"),
)
MESSAGE_GROUP_ID = re.compile(r"^[!-~]{1,128}$")  # printable ASCII, no space
# SendMessage's limits on the message (body and attributes): the event can break them while
# the queue is fine (Herald's events may be 256 KB before the envelope is added).
MAX_MESSAGE_BYTES = 256 * 1024
# Anything but these characters is refused (InvalidMessageContents); JSON escapes the
# control characters but not U+FFFE, U+FFFF.
REFUSED_CHARACTER = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def message_refusal(body: str, attributes: dict[str, str]) -> EventRejected | None:
    """Why SendMessage would refuse this message for the event's own sake, or None."""
    texts = [body, *attributes.values()]
    if any(REFUSED_CHARACTER.search(text) for text in texts):
        return EventRejected("the event has characters SQS does not accept in a message")
    size = len(body.encode()) + sum(
        len(name.encode()) + len("String") + len(value.encode())
        for name, value in attributes.items()
    )
    if size > MAX_MESSAGE_BYTES:
        return EventRejected(
            f"the event makes a {size}-byte message; SQS takes at most {MAX_MESSAGE_BYTES}"
        )
    return None


def region_of(queue_url: str) -> str | None:
    """The region an AWS queue URL names in its host, or None (an emulator's URL)."""
    host = (urlsplit(queue_url).hostname or "").lower()
    if host == "queue.amazonaws.com":
        return "us-east-1"
    for pattern in REGION_HOSTS:
        found = pattern.search(host)
        if found and REGION.match(found.group(1)):
            return found.group(1)
    return None


def is_fifo(queue_url: str) -> bool:
    """FIFO queues' names end in .fifo."""
    return urlsplit(queue_url).path.endswith(".fifo")


class SqsPublisher:
    """Sends to one queue; FIFO queues get a message group and deduplicate on the delivery."""

    def __init__(self, client: AwsClient, target: Target) -> None:
        self._client = client
        self._queue_url: str = target.config["queue_url"]
        self._group_id: str | None = None
        if is_fifo(self._queue_url):
            self._group_id = target.config.get("message_group_id") or target.destination_id

    async def publish(self, delivery_id: str, event: dict[str, Any], body: bytes) -> DeliveryResult:
        """SendMessage with the envelope as the body and the delivery's identity as
        message attributes."""
        text, attributes = body.decode("utf-8"), metadata(delivery_id, event)
        refusal = message_refusal(text, attributes)
        if refusal is not None:
            raise refusal
        params: dict[str, Any] = {
            "QueueUrl": self._queue_url,
            "MessageBody": text,
            "MessageAttributes": {
                name: {"DataType": "String", "StringValue": value}
                for name, value in attributes.items()
            },
        }
        if self._group_id is not None:
            params["MessageGroupId"] = self._group_id
            params["MessageDeduplicationId"] = delivery_id
        response = await self._client.call("send_message", **params)
        return result(response, message_id=response.get("MessageId"))

    async def close(self) -> None:
        """Close the destination's client; calling it twice is harmless."""
        await self._client.close()


class SqsSink:
    """aws_sqs: `queue_url`, `key`/`access_key`, `secret`/`secret_key`; Herald adds an
    optional `region` (for URLs that do not name one) and `message_group_id` (FIFO)."""

    type = "aws_sqs"

    def __init__(self) -> None:
        self._clients = AwsClients("sqs")

    def validate(
        self, raw: Any, errors: FieldErrors, path: str, settings: Settings
    ) -> tuple[Config, Credentials]:
        """Shape only: a queue URL, a region known from it or given, and the key pair."""
        raw = config_object(errors, raw, path, self.type)
        known = ("queue_url", "region", "message_group_id", *KEY_AND_SECRET.names)
        unknown_fields(errors, raw, path, known)
        config: Config = {"queue_url": self._queue_url(errors, raw, path)}
        given_region = region(errors, raw, path, required=False)
        if config["queue_url"] is not None and f"{path}.region" not in errors.by_field:
            self._check_region(errors, path, config["queue_url"], given_region)
        if given_region is not None:
            config["region"] = given_region
        group_id = matching(
            errors,
            raw,
            path,
            "message_group_id",
            MESSAGE_GROUP_ID,
            "1 to 128 printable ASCII characters without spaces",
            required=False,
        )
        if group_id is not None:
            if config["queue_url"] and not is_fifo(config["queue_url"]):
                errors.add(f"{path}.message_group_id", "applies to FIFO queues (.fifo) only.")
            config["message_group_id"] = group_id
        return config, credentials(errors, raw, path, KEY_AND_SECRET, settings)

    @staticmethod
    def _queue_url(errors: FieldErrors, raw: dict[str, Any], path: str) -> str | None:
        url = http_url(errors, raw.get("queue_url"), f"{path}.queue_url")
        if url is not None and not QUEUE_PATH.match(urlsplit(url).path):
            errors.add(
                f"{path}.queue_url",
                "must be an SQS queue URL such as "
                "https://sqs.us-east-1.amazonaws.com/123456789012/my-queue.",
            )
            return None
        return url

    @staticmethod
    def _check_region(errors: FieldErrors, path: str, queue_url: str, given: str | None) -> None:
        derived = region_of(queue_url)
        if derived is None and given is None:
            errors.add(f"{path}.region", "is required when queue_url does not name a region.")
        elif derived is not None and given is not None and derived != given:
            errors.add(f"{path}.region", "does not match the region in queue_url.")

    async def open(self, target: Target, settings: Settings) -> Publisher:
        """A publisher with its own client, signing for the queue's region."""
        queue_region = target.config.get("region") or region_of(target.config["queue_url"])
        client = await self._clients.open(
            queue_region or "us-east-1", KEY_AND_SECRET.key_pair(target.credentials), settings
        )
        return SqsPublisher(client, target)

    async def aclose(self) -> None:
        """Stop the sink's threads."""
        await self._clients.aclose()


SINK = SqsSink()
