"""Nothing acknowledged is lost: workers and the API killed with SIGKILL mid-stream.

Every event that got a 2xx must reach every subscriber at least once; duplicates are
counted and reported (delivery is at-least-once; receivers deduplicate on webhook-id).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.faults.conftest import RESULTS, Herald
from tests.integration.conftest import DEV_KEY, _script, service_env
from tests.support import eventually

# Each scenario runs for a minute or more, services start included.
pytestmark = pytest.mark.timeout(900)

EVENTS = int(os.environ.get("HERALD_FAULT_EVENTS", "3000"))
SUBSCRIBERS = 3
BATCH = 250


@dataclass
class Counting:
    """A receiver that counts deliveries per (path, event id)."""

    seen: Counter[tuple[str, str]] = field(default_factory=Counter)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.seen[(request.path, body["id"])] += 1
        return web.Response(text="ok")


@pytest.fixture
async def counting() -> AsyncIterator[Counting]:
    receiver = Counting()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    yield receiver
    await runner.cleanup()


class Client:
    """The API through its HTTP interface, retrying nothing by itself."""

    opened: list[Client] = []  # noqa: RUF012 - closed by the `close_clients` fixture

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {DEV_KEY}"})
        Client.opened.append(self)

    async def subscribe(self, receiver: Counting, event_type: str) -> list[str]:
        ids = []
        for n in range(SUBSCRIBERS):
            async with self.session.post(
                f"{self.url}/v2/event-destinations",
                json={
                    "name": f"fault-{n}",
                    "webhook": {"url": f"{receiver.url}/d{n}"},
                    "events": [event_type],
                },
            ) as response:
                assert response.status == 201, await response.text()
                ids.append((await response.json())["id"])
        return ids

    async def publish_batch(
        self, event_type: str, start: int, event_ids: list[str] | None = None
    ) -> list[str]:
        """Event ids acknowledged (202); raises on a connection error or non-2xx. With
        `event_ids`, the events carry those publisher-chosen ids."""
        events: list[dict[str, object]] = [
            {"type": event_type, "data": {"n": n}} for n in range(start, start + BATCH)
        ]
        for event, event_id in zip(events, event_ids or [], strict=False):
            event["id"] = event_id
        async with self.session.post(
            f"{self.url}/v2/events/batch", json={"events": events}
        ) as response:
            if response.status != 202:
                raise RuntimeError(f"batch answered {response.status}")
            body = await response.json()
            return [item["id"] for item in body["data"] if item["status"] == "accepted"]

    async def delete(self, destination_ids: list[str]) -> None:
        for destination_id in destination_ids:
            async with self.session.delete(f"{self.url}/v2/event-destinations/{destination_id}"):
                pass

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    yield
    while Client.opened:
        await Client.opened.pop().close()


def record(scenario: str, acked: set[str], receiver: Counting, sent: int) -> tuple[int, int]:
    """Append the scenario's row to the summary; returns (lost, duplicated)."""
    expected = {(f"/d{n}", event_id) for n in range(SUBSCRIBERS) for event_id in acked}
    received = {key for key in receiver.seen if key[1] in acked}
    lost = len(expected - received)
    duplicated = sum(count - 1 for key, count in receiver.seen.items() if count > 1)
    RESULTS.append(
        {
            "scenario": scenario,
            "sent": sent,
            "acknowledged": len(acked),
            "delivered": len(received),
            "lost": lost,
            "duplicated": duplicated,
        }
    )
    return lost, duplicated


async def wait_all(
    receiver: Counting, acked: set[str], timeout_s: float = 240, herald: Herald | None = None
) -> None:
    """Every acked event at every subscriber; with `herald`, a process that exits on its own
    meanwhile is started again, as its supervisor would."""
    expected = {(f"/d{n}", e) for n in range(SUBSCRIBERS) for e in acked}

    async def done() -> bool:
        if herald is not None:
            await asyncio.to_thread(herald.restart_exited)  # its start waits for /readyz
        return expected <= set(receiver.seen)

    await eventually(
        done,
        timeout_s=timeout_s,
        interval_s=0.5,
        what=f"{len(expected)} deliveries",
    )


async def publish_all(client: Client, event_type: str, on_progress: object = None) -> set[str]:
    acked: set[str] = set()
    for start in range(0, EVENTS, BATCH):
        acked.update(await client.publish_batch(event_type, start))
    return acked


async def test_worker_killed_and_restarted(herald: Herald, counting: Counting) -> None:
    client = Client(herald.start("api", "api", 0))
    herald.start("w1", "worker", 1)
    event_type = f"fault.restart{int(time.time())}"
    destinations = await client.subscribe(counting, event_type)
    acked = await publish_all(client, event_type)
    await eventually(
        lambda: sum(counting.seen.values()) >= len(acked) * SUBSCRIBERS // 5,
        timeout_s=120,
        what="a fifth of the deliveries",
    )
    herald.kill("w1")
    herald.start("w1-again", "worker", 1)
    await wait_all(counting, acked)
    lost, _ = record("worker kill -9, restart", acked, counting, EVENTS)
    await client.delete(destinations)
    assert lost == 0


async def test_one_of_two_workers_killed(herald: Herald, counting: Counting) -> None:
    client = Client(herald.start("api", "api", 0))
    herald.start("w1", "worker", 1)
    herald.start("w2", "worker", 2)
    event_type = f"fault.twoworkers{int(time.time())}"
    destinations = await client.subscribe(counting, event_type)
    acked = await publish_all(client, event_type)
    await eventually(
        lambda: sum(counting.seen.values()) >= len(acked) * SUBSCRIBERS // 5,
        timeout_s=120,
        what="a fifth of the deliveries",
    )
    herald.kill("w2")  # the survivor must take its partitions
    await wait_all(counting, acked)
    lost, _ = record("1 of 2 workers kill -9", acked, counting, EVENTS)
    await client.delete(destinations)
    assert lost == 0


async def test_api_killed_mid_batch(herald: Herald, counting: Counting) -> None:
    url = herald.start("api", "api", 0)
    herald.start("w1", "worker", 1)
    client = Client(url)
    event_type = f"fault.api{int(time.time())}"
    destinations = await client.subscribe(counting, event_type)
    acked: set[str] = set()
    failed_batches = 0
    sent = 0

    async def load() -> None:
        nonlocal failed_batches, sent
        for start in range(0, EVENTS, BATCH):
            sent += BATCH
            try:
                acked.update(await client.publish_batch(event_type, start))
            except (aiohttp.ClientError, RuntimeError):
                failed_batches += 1
                await asyncio.sleep(0.2)  # the API is restarting: pace the retries

    loader = asyncio.create_task(load())
    await eventually(lambda: len(acked) >= EVENTS // 4, timeout_s=120, what="a quarter acked")
    herald.kill("api")
    await asyncio.to_thread(herald.start, "api-again", "api", 0)
    await loader
    await wait_all(counting, acked)
    lost, _ = record("API kill -9 mid-batch", acked, counting, sent)

    # An event that reached any subscriber reaches all of them: nothing is half-delivered.
    # Events the broker took from the killed batch without an answer to the client are
    # delivered too, and may still be arriving once every acked one has: wait for them.
    def whole() -> bool:
        reached = Counter(event_id for (path, event_id) in counting.seen if path.startswith("/d"))
        return all(count == SUBSCRIBERS for count in reached.values())

    await eventually(whole, timeout_s=60, interval_s=0.5, what="no event half-delivered")
    await client.delete(destinations)
    assert lost == 0
    assert failed_batches >= 1, "the kill happened after the load finished: test proved nothing"


async def test_broker_restart(herald: Herald, counting: Counting) -> None:
    client = Client(herald.start("api", "api", 0))
    herald.start("w1", "worker", 1)
    event_type = f"fault.broker{int(time.time())}"
    destinations = await client.subscribe(counting, event_type)
    acked: set[str] = set()
    for start in range(0, EVENTS // 2, BATCH):
        acked.update(await client.publish_batch(event_type, start))
    kafka_env = service_env()["kafka/kafka.sh"]
    await asyncio.to_thread(_script, "kafka/kafka.sh", "stop", env=kafka_env)
    async with client.session.post(
        f"{client.url}/v2/events", json={"type": event_type, "data": {}}
    ) as response:
        assert response.status == 503
        assert int(response.headers["Retry-After"]) >= 1
    await asyncio.to_thread(_script, "kafka/kafka.sh", "start", env=kafka_env)

    async def publish_again() -> bool:
        try:
            acked.update(await client.publish_batch(event_type, EVENTS // 2))
        except (aiohttp.ClientError, RuntimeError):
            return False
        return True

    await eventually(publish_again, timeout_s=90, interval_s=1, what="the API to recover")
    # A worker whose writes the restarting broker refused for good exits for its supervisor
    # to restart it (pipeline/attempts.py): nothing it had in hand may be lost.
    await wait_all(counting, acked, herald=herald)
    lost, _ = record("broker stop/start", acked, counting, EVENTS // 2 + BATCH + 1)
    await client.delete(destinations)
    assert lost == 0
