"""AWS SQS sink conformance against moto's server on 127.0.0.1 (a real SQS API)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pipeline.sinks import load_sink
from tests.integration.sinks.conformance import SinkCase, SinkConformance, envelope, target_of
from tests.integration.sinks.conftest import Aws
from tests.support import eventually


def _bodies(
    messages: Callable[[], Awaitable[list[dict[str, Any]]]],
) -> Callable[[], Awaitable[list[bytes]]]:
    async def received() -> list[bytes]:
        return [m["Body"].encode() for m in await messages()]

    return received


def _case(aws: Aws, queue_name: str) -> tuple[SinkCase, Callable[[], Awaitable[list[Any]]]]:
    queue_url, _ = aws.new_queue(queue_name)
    messages = aws.queue_messages(queue_url)
    # The alias names (access_key, secret_key), so the aliases are proven end to end.
    config = {
        "queue_url": queue_url,
        "region": aws.region,
        "access_key": aws.key_id,
        "secret_key": aws.secret,
    }
    missing = f"{aws.url}/123456789012/herald-missing-{uuid.uuid4().hex}"
    case = SinkCase(
        "aws_sqs",
        aws.settings,
        raw_config=config,
        received=_bodies(messages),
        retryable_config=config,
        permanent_config={**config, "queue_url": missing},
        secrets=[aws.key_id, aws.secret],
        retryable_settings=aws.unreachable_settings,
    )
    return case, messages


class TestSqsSink(SinkConformance):
    @pytest.fixture
    def case(self, aws: Aws) -> SinkCase:
        return _case(aws, f"herald-{uuid.uuid4().hex}")[0]


async def _deliver_and_read(
    aws: Aws, queue_name: str, times: int = 1
) -> tuple[str, str, dict[str, Any], list[dict[str, Any]]]:
    case, messages = _case(aws, queue_name)
    target = target_of(case, case.raw_config)
    sink = load_sink("aws_sqs")
    publisher = await sink.open(target, case.settings)
    delivery_id, event, body = envelope()
    try:
        for _ in range(times):
            await publisher.publish(delivery_id, event, body)
        await eventually(messages, timeout_s=10, what="the message")
        found = await messages()  # and whatever else arrived with it
    finally:
        await publisher.close()
        await sink.aclose()
    return target.destination_id, delivery_id, event, found


async def test_message_attributes_carry_the_delivery(aws: Aws) -> None:
    _, delivery_id, event, messages = await _deliver_and_read(aws, f"herald-{uuid.uuid4().hex}")
    attributes = {k: v["StringValue"] for k, v in messages[0]["MessageAttributes"].items()}
    assert attributes == {
        "herald-event-id": event["id"],
        "herald-event-type": event["type"],
        "herald-delivery-id": delivery_id,
        "herald-created-at": event["created_at"],
    }


async def test_fifo_queue_groups_by_destination_and_deduplicates_on_the_delivery(
    aws: Aws,
) -> None:
    destination_id, delivery_id, _, messages = await _deliver_and_read(
        aws, f"herald-{uuid.uuid4().hex}.fifo", times=2
    )
    assert len(messages) == 1
    assert messages[0]["Attributes"]["MessageGroupId"] == destination_id
    assert messages[0]["Attributes"]["MessageDeduplicationId"] == delivery_id
