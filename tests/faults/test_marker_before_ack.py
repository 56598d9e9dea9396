"""A worker killed between routing and acknowledgement loses no publisher-id event.

The router records a publisher-chosen event id (its dedupe marker, on `event-ids`) so a
second publish of the id is dropped. If the marker reaches Kafka while the event's
deliveries do not, and the worker dies before acknowledging the event, the restarted
worker routes the event again, finds its marker, and drops it as a duplicate: the event
got its 202 and is never delivered.

The scenario makes that window wide and certain instead of hoping a kill lands in it:
the broker refuses every record on `deliveries` (max.message.bytes below any delivery's
size; min.insync.replicas cannot do it, Kafka caps it at the replication factor), while
`event-ids` stays writable. Once the worker has tried to send (its log names the
refusal) it is killed, `deliveries` takes records again, and a new worker must deliver
every acknowledged event to every subscriber.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.settings import Settings
from pipeline.topics import DELIVERIES, load_specs
from tests.faults.conftest import Herald
from tests.faults.test_crashes import BATCH, Client, Counting, record, wait_all
from tests.faults.test_crashes import close_clients as close_clients  # the fixtures
from tests.faults.test_crashes import counting as counting
from tests.support import eventually

pytestmark = pytest.mark.timeout(600)

DELIVERY_DEADLINE_S = 120.0


async def _set_deliveries_config(bootstrap: str, **extra: str) -> None:
    # AlterConfigs replaces the topic's whole config: give topics.yaml's with it.
    [spec] = [s for s in load_specs(Settings().topics_file) if s.name == DELIVERIES]
    configs = {**spec.config, **{k.replace("_", "."): v for k, v in extra.items()}}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, DELIVERIES, configs=configs)
        [response] = await admin.alter_configs([resource])
    finally:
        await admin.close()
    assert all(error_code == 0 for error_code, *_ in response.resources), response


@contextlib.asynccontextmanager
async def deliveries_unwritable(bootstrap: str) -> AsyncIterator[None]:
    """Every produce to `deliveries` is refused (MESSAGE_TOO_LARGE) meanwhile."""
    await _set_deliveries_config(bootstrap, max_message_bytes="64")
    try:
        yield
    finally:
        await _set_deliveries_config(bootstrap)


REFUSED = re.compile(r"MessageSizeTooLarge|RecordTooLarge|too large", re.IGNORECASE)


def _refusal_logged(log: Path) -> bool:
    """The worker's log names the broker's refusal of a delivery record."""
    return bool(REFUSED.search(log.read_text(errors="replace")))


async def test_worker_killed_between_routing_and_acknowledgement(
    herald: Herald, counting: Counting
) -> None:
    client = Client(herald.start("api", "api", 0))
    herald.start("w1", "worker", 1)
    event_type = f"fault.markers{int(time.time())}"
    destinations = await client.subscribe(counting, event_type)
    event_ids = [f"evt_fault_{uuid.uuid4().hex}" for _ in range(BATCH)]
    bootstrap = herald.services.kafka_bootstrap
    log = herald.logs / f"{herald.app_id}-w1.log"
    async with deliveries_unwritable(bootstrap):
        acked = set(await client.publish_batch(event_type, 0, event_ids))
        # The router has routed events and tried to send their deliveries: refused.
        await eventually(
            lambda: _refusal_logged(log), timeout_s=60, interval_s=0.2, what="a refused send"
        )
        assert not counting.seen
        herald.kill("w1")
    herald.start("w1-again", "worker", 1)
    with contextlib.suppress(AssertionError):  # the count below says what is missing
        await wait_all(counting, acked, timeout_s=DELIVERY_DEADLINE_S)
    lost, _ = record("worker kill -9 between routing and ack", acked, counting, len(event_ids))
    await client.delete(destinations)
    assert len(acked) == len(event_ids)
    assert lost == 0
