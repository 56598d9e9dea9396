"""No error inside a sink leaves a `deliveries` offset unfinished (issue 12, B6).

A destination record the API would refuse today, written straight to
`destination-changes` (as input accepted by an older API, or another writer, could be),
makes the webhook sink raise something that is no DeliveryError: aiohttp's ValueError for
a header value with CR/LF, or a TypeError for a URL that is not text. The delivery must end
in a recorded retryable failure with a generic error text, and the partition's committed
offset must move past it (it used to stay `pending`, its offset unfinished for good).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline import delivery_record, ids
from pipeline.outcomes import UNEXPECTED_ERROR
from pipeline.settings import Settings
from pipeline.timeutil import now_iso
from pipeline.topics import DELIVERIES, DESTINATION_CHANGES, load_specs
from tests.integration.api_client import Api
from tests.integration.conftest import Services
from tests.support import Receiver, eventually

SINKS_GROUP = "herald-sinks"  # DeliveryRunner.group_id for the default app id


async def _append_change(bootstrap: str, destination_id: str, fields: dict[str, Any]) -> str:
    change = {
        "change_id": ids.new_id(ids.CHANGE),
        "op": "update",
        "at": now_iso(),
        "destination_id": destination_id,
        "fields": fields,
    }
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            DESTINATION_CHANGES,
            orjson.dumps(change),
            key=ids.scoped(Settings().dev_tenant, destination_id).encode(),
        )
    finally:
        await producer.stop()
    return str(change["at"])


async def _delivery_offset(
    bootstrap: str, starts: dict[TopicPartition, int], destination_id: str
) -> tuple[TopicPartition, int]:
    """Where the destination's first delivery since `starts` sits in `deliveries`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)

        async def found() -> tuple[TopicPartition, int] | None:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    head = delivery_record.head(record.value) if record.value else {}
                    if head.get("destination_id") == destination_id:
                        return tp, record.offset
            return None

        where: tuple[TopicPartition, int] = await eventually(found, what="the delivery record")
        return where
    finally:
        await consumer.stop()


async def _end_offsets(bootstrap: str) -> dict[TopicPartition, int]:
    specs = {s.name: s.partitions for s in load_specs(Settings().topics_file)}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(DELIVERIES, p) for p in range(specs[DELIVERIES])]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def _committed(bootstrap: str, tp: TopicPartition) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(SINKS_GROUP, partitions=[tp])
    finally:
        await admin.close()
    meta = offsets.get(tp)
    return meta.offset if meta is not None else -1


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param({"custom_headers": {"X-Test": "a\r\nInjected: yes"}}, id="crlf_header"),
        pytest.param({"url": ["not", "text"]}, id="url_not_text"),
    ],
)
async def test_a_sink_error_is_a_failed_attempt_and_the_offset_moves_past_it(
    api: Api, services: Services, receiver: Receiver, broken: dict[str, Any]
) -> None:
    bootstrap = services.kafka_bootstrap
    event_type = f"stall_check.{ids.new_id('x').lower()}"
    destination = await api.create_webhook(f"{receiver.url}/stall", [event_type])
    destination_id = destination["id"]
    config = {"url": f"{receiver.url}/stall", **broken}
    at = await _append_change(bootstrap, destination_id, {"config": config})

    async def changed() -> bool:
        _, body = await api.call("GET", f"/v2/event-destinations/{destination_id}")
        return bool(body.get("updated_at") == at)

    await eventually(changed, what="the API's view to have the change")
    starts = await _end_offsets(bootstrap)
    await api.publish(event_type)
    tp, offset = await _delivery_offset(bootstrap, starts, destination_id)

    async def first_attempt() -> dict[str, Any] | None:
        _, log = await api.call("GET", f"/v2/event-destinations/{destination_id}/event-deliveries")
        if not log["data"]:
            return None
        _, delivery = await api.call("GET", f"/v2/event-deliveries/{log['data'][0]['id']}")
        return delivery["attempts"][0] if delivery["attempts"] else None

    attempt = await eventually(first_attempt, timeout_s=30, what="a recorded attempt")
    assert attempt["outcome"] == "failed"
    assert attempt["error"] == UNEXPECTED_ERROR  # nothing of the exception's own text
    assert "Injected" not in str(attempt)

    async def committed_past() -> bool:
        return await _committed(bootstrap, tp) > offset

    await eventually(committed_past, timeout_s=30, what="the committed offset past the delivery")
    assert not receiver.bodies("/stall")
    await api.call("DELETE", f"/v2/event-destinations/{destination_id}")
