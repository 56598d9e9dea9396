"""AWS EventBridge sink conformance against moto's server on 127.0.0.1 (a real EventBridge
API): a bus whose rule targets an SQS queue, read back to observe each delivery."""

from __future__ import annotations

import json
import uuid

import orjson
import pytest

from pipeline.sinks import load_sink
from pipeline.sinks.base import PermanentError
from tests.integration.sinks.conformance import SinkCase, SinkConformance, envelope, target_of
from tests.integration.sinks.conftest import Aws
from tests.support import eventually


class TestEventBridgeSink(SinkConformance):
    @pytest.fixture
    def case(self, aws: Aws) -> SinkCase:
        bus = f"herald-{uuid.uuid4().hex}"
        events = aws.client("events")
        events.create_event_bus(Name=bus)
        queue_url, queue_arn = aws.new_queue(bus)
        source = aws.settings.eventbridge_source
        events.put_rule(Name="all", EventBusName=bus, EventPattern=json.dumps({"source": [source]}))
        events.put_targets(Rule="all", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])
        messages = aws.queue_messages(queue_url)

        async def received() -> list[bytes]:
            # The rule wraps the Detail in an event; re-serialized, it is the envelope again.
            return [orjson.dumps(json.loads(m["Body"])["detail"]) for m in await messages()]

        # EventBridge has no aliases: access_key_id and secret_access_key.
        config = {
            "event_bus_name": bus,
            "region": aws.region,
            "access_key_id": aws.key_id,
            "secret_access_key": aws.secret,
        }
        return SinkCase(
            "aws_eventbridge",
            aws.settings,
            raw_config=config,
            received=received,
            retryable_config=config,
            permanent_config={**config, "event_bus_name": f"herald-missing-{uuid.uuid4().hex}"},
            secrets=[aws.key_id, aws.secret],
            retryable_settings=aws.unreachable_settings,
        )

    async def test_event_type_is_the_detail_type(self, case: SinkCase, aws: Aws) -> None:
        publisher = await load_sink("aws_eventbridge").open(
            target_of(case, case.raw_config), case.settings
        )
        delivery_id, event, body = envelope()
        try:
            await publisher.publish(delivery_id, event, body)
        finally:
            await publisher.close()
        queue_url = aws.client("sqs").get_queue_url(QueueName=case.raw_config["event_bus_name"])[
            "QueueUrl"
        ]
        messages = await eventually(aws.queue_messages(queue_url), timeout_s=10, what="event")
        wrapped = json.loads(messages[0]["Body"])
        assert wrapped["detail-type"] == event["type"]
        assert wrapped["source"] == case.settings.eventbridge_source

    async def test_a_refused_entry_is_a_failure(self, case: SinkCase) -> None:
        # PutEvents answers 200 with FailedEntryCount 1 for a Detail that is not JSON.
        publisher = await load_sink("aws_eventbridge").open(
            target_of(case, case.raw_config), case.settings
        )
        delivery_id, event, _ = envelope()
        try:
            with pytest.raises(PermanentError, match="MalformedDetail"):
                await publisher.publish(delivery_id, event, b"not json")
        finally:
            await publisher.close()
