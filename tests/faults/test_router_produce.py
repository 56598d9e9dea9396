"""The router's produce path broken (issue 12, B8): the worker exits non-zero instead of
acknowledging events whose deliveries the broker never took, and a restarted worker
delivers them.

The path is broken for real: the `deliveries` topic's `max.message.bytes` is lowered below
one delivery of a large event, so the broker refuses the router's sends.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.settings import Settings
from pipeline.supervision import EXIT_BROKER_UNREACHABLE
from pipeline.topics import DELIVERIES, load_specs
from tests.faults.conftest import RESULTS, Herald
from tests.faults.test_crashes import SUBSCRIBERS, Client, Counting
from tests.faults.test_crashes import close_clients as close_clients
from tests.faults.test_crashes import counting as counting
from tests.support import eventually

pytestmark = pytest.mark.timeout(600)
GIVE_UP_S = 3


@pytest.fixture
async def admin(herald: Herald) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=herald.services.kafka_bootstrap)
    await client.start()
    yield client
    await client.close()


async def _deliveries_config(admin: AIOKafkaAdminClient, **extra: str) -> None:
    """Set the topic's configuration to topics.yaml's plus `extra` (dots for underscores)."""
    [spec] = [s for s in load_specs(Settings().topics_file) if s.name == DELIVERIES]
    configs = {**spec.config, **{k.replace("_", "."): v for k, v in extra.items()}}
    await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, DELIVERIES, configs)])


async def _publish(client: Client, event_type: str, data: dict[str, str]) -> str:
    async with client.session.post(
        f"{client.url}/v2/events", json={"type": event_type, "data": data}
    ) as response:
        assert response.status == 202, await response.text()
        return str((await response.json())["id"])


def _delivered(receiver: Counting, event_id: str) -> bool:
    return all((f"/d{n}", event_id) in receiver.seen for n in range(SUBSCRIBERS))


async def test_router_exits_when_the_broker_refuses_its_deliveries(
    herald: Herald, counting: Counting, admin: AIOKafkaAdminClient
) -> None:
    base_env = herald.env
    herald.env = lambda port: {  # type: ignore[method-assign]
        **base_env(port),
        "HERALD_BROKER_GIVE_UP_S": str(GIVE_UP_S),
    }
    client = Client(herald.start("api", "api", 0))
    herald.start("w1", "worker", 1)
    event_type = f"fault.produce{int(time.time())}"
    destinations = await client.subscribe(counting, event_type)
    small = await _publish(client, event_type, {})
    await eventually(lambda: _delivered(counting, small), timeout_s=60, what="a small event")
    worker = herald.processes["w1"]
    await _deliveries_config(admin, max_message_bytes="2000")
    try:
        large = await _publish(client, event_type, {"pad": "x" * 4000})
        await eventually(
            lambda: worker.poll() is not None, timeout_s=120, what="the worker to exit"
        )
        assert worker.returncode == EXIT_BROKER_UNREACHABLE
        assert not any(event_id == large for _, event_id in counting.seen)
    finally:
        await _deliveries_config(admin)
    herald.processes.pop("w1")
    herald.start("w1-again", "worker", 1)
    await eventually(
        lambda: _delivered(counting, large), timeout_s=120, what="the large event, after restart"
    )
    RESULTS.append(
        {
            "scenario": "router produce refused",
            "sent": 2,
            "acknowledged": 2,
            "delivered": sum(_delivered(counting, e) for e in (small, large)),
            "lost": sum(not _delivered(counting, e) for e in (small, large)),
            "duplicated": sum(c - 1 for c in counting.seen.values() if c > 1),
        }
    )
    await client.delete(destinations)
