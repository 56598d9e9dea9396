"""Roles that scale apart: one router (with the index) and two delivering processes.

Phase 1: both delivering processes deliver a share, and every (event, destination) is
delivered exactly once. Phase 2: one delivering process is killed with SIGKILL mid-run;
every acknowledged (event, destination) still arrives (0 lost), duplicates are counted.
"""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import pytest
from aiokafka.partitioner import murmur2

from pipeline.ids import scoped
from pipeline.settings import Settings
from pipeline.topics import DELIVERIES, load_specs
from tests.faults.conftest import RESULTS, Herald
from tests.faults.test_crashes import BATCH, Client, Counting
from tests.faults.test_crashes import close_clients as close_clients  # autouse: closes Client
from tests.faults.test_crashes import counting as counting
from tests.support import eventually

# Services, four processes and two phases of deliveries.
pytestmark = pytest.mark.timeout(900)

DEV_TENANT = "dev"  # tests/integration/conftest.py sets HERALD_DEV_TENANT
PARTITIONS = {s.name: s.partitions for s in load_specs(Settings().topics_file)}
PHASE_EVENTS = BATCH  # phase 1 (one batch); phase 2 has twice as many; each to every destination
ASSIGNED = re.compile(r"delivery runner assigned (\d+) partitions")
SUCCESS = re.compile(r'^herald_delivery_attempts_total\{[^}]*outcome="success"[^}]*\} (\S+)$', re.M)


def one_id_per_partition(prefix: str) -> list[str]:
    """Destination ids whose deliveries land one in each `deliveries` partition, so every
    delivering process has some, whichever partitions the group hands it."""
    count = PARTITIONS[DELIVERIES]
    found: dict[int, str] = {}
    n = 0
    while len(found) < count:
        candidate = f"{prefix}{n}"
        partition = (murmur2(scoped(DEV_TENANT, candidate).encode()) & 0x7FFFFFFF) % count
        found.setdefault(partition, candidate)
        n += 1
    return [found[p] for p in range(count)]


async def subscribe(client: Client, receiver: Counting, event_type: str) -> list[str]:
    ids = one_id_per_partition(f"evtd_roles{time.time_ns()}_")
    for destination_id in ids:
        async with client.session.post(
            f"{client.url}/v2/event-destinations",
            json={
                "id": destination_id,
                "name": destination_id,
                "webhook": {"url": f"{receiver.url}/{destination_id}"},
                "events": [event_type],
            },
        ) as response:
            assert response.status == 201, await response.text()
    return ids


async def publish(client: Client, event_type: str, events: int) -> set[str]:
    acked: set[str] = set()
    for start in range(0, events, BATCH):
        acked.update(await client.publish_batch(event_type, start))
    return acked


async def readiness(url: str) -> dict[str, str]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as response:
        checks: dict[str, str] = (await response.json())["checks"]
        return checks


async def delivered_by(url: str) -> float:
    """Successful attempts the process at `url` has recorded, from its /metrics."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        return sum(float(v) for v in SUCCESS.findall(await response.text()))


def group_settled(herald: Herald, names: list[str]) -> bool:
    """Every partition of the sinks group is held by exactly one of `names`: the last
    assignment each one logged adds up to all of them, and none holds nothing."""
    tiers = int(herald.env(0)["HERALD_MAX_RETRIES"])
    total = PARTITIONS[DELIVERIES] + tiers * PARTITIONS["deliveries.retry.1"]
    last = []
    for name in names:
        counts = ASSIGNED.findall(herald.log(name).read_text())
        last.append(int(counts[-1]) if counts else 0)
    return sum(last) == total and all(last)


def tally(receiver: Counting, destinations: list[str], acked: set[str]) -> tuple[int, int, int]:
    """(delivered, lost, duplicated) over every acked event at every destination."""
    expected = {(f"/{d}", e) for d in destinations for e in acked}
    seen = {key: count for key, count in receiver.seen.items() if key in expected}
    duplicated = sum(count - 1 for count in seen.values())
    return len(seen), len(expected - set(seen)), duplicated


async def test_two_delivering_processes_one_killed(herald: Herald, counting: Counting) -> None:
    # Phase 1 counts duplicates as failures: on a loaded machine a receiver slower than the
    # default timeout would be attempted twice (at-least-once, and not what is tested here).
    herald.extra_env["HERALD_DELIVERY_TIMEOUT_S"] = "30"
    client = Client(herald.start("api", "api", 0))
    router = herald.start("router", "worker", 1, "--role", "router,index")
    deliver = {
        name: herald.start(name, "worker", offset, "--role", "deliver")
        for name, offset in (("d1", 2), ("d2", 3))
    }
    # /readyz checks only what each process runs.
    assert set(await readiness(router)) == {"kafka", "database", "index_loop"}
    for url in deliver.values():
        assert set(await readiness(url)) == {"kafka", "delivery_loop"}
    await eventually(
        lambda: group_settled(herald, list(deliver)), timeout_s=60, what="both in the group"
    )
    event_type = f"fault.roles{int(time.time())}"
    destinations = await subscribe(client, counting, event_type)

    acked = await publish(client, event_type, PHASE_EVENTS)
    expected = len(acked) * len(destinations)
    restarted: list[str] = []

    async def phase_1_arrived() -> bool:
        restarted.extend(await asyncio.to_thread(herald.restart_exited))
        return tally(counting, destinations, acked)[0] == expected

    await eventually(
        phase_1_arrived,
        timeout_s=240,
        interval_s=0.5,
        what=f"{expected} deliveries",
    )
    shares = [await delivered_by(url) for url in deliver.values()]
    delivered, lost, duplicated = tally(counting, destinations, acked)
    print(f"phase 1: {expected} deliveries, by process {shares}, {duplicated} duplicated")
    assert all(share > 0 for share in shares), shares
    assert (lost, duplicated, restarted) == (0, 0, [])

    more = await publish(client, event_type, PHASE_EVENTS * 2)
    await eventually(
        lambda: tally(counting, destinations, more)[0] >= len(more) * len(destinations) // 5,
        timeout_s=120,
        what="a fifth of phase 2's deliveries",
    )
    herald.kill("d2")  # mid-run: d1 must take its partitions over

    async def all_arrived() -> bool:
        # A process that exits on its own (the broker would not take its records) is
        # started again, as its supervisor would; the killed one stays down.
        await asyncio.to_thread(herald.restart_exited)
        return tally(counting, destinations, more)[1] == 0

    await eventually(
        all_arrived,
        timeout_s=240,
        interval_s=0.5,
        what="every delivery of phase 2",
    )
    delivered, lost, duplicated = tally(counting, destinations, more)
    print(f"phase 2: {delivered} delivered after kill -9 of d2, {duplicated} duplicated")
    RESULTS.append(
        {
            "scenario": "1 of 2 deliver kill -9",
            "sent": PHASE_EVENTS * 2,
            "acknowledged": len(more),
            "delivered": delivered,
            "lost": lost,
            "duplicated": duplicated,
        }
    )
    await asyncio.gather(*(delete(client, d) for d in destinations))
    assert lost == 0


async def delete(client: Client, destination_id: str) -> None:
    async with client.session.delete(f"{client.url}/v2/event-destinations/{destination_id}"):
        pass
