"""Ordered delivery per key survives a crash: 10,000 events over 100 keys to a per_key
destination whose receiver fails the first attempt of one event in ten, with the worker
killed by SIGKILL mid-run. Nothing acknowledged may be lost, and no key's event may reach
the receiver for the first time before the previous one was answered 2xx (redelivery of
what was already delivered is allowed, and counted)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.faults.conftest import RESULTS, Herald
from tests.integration.conftest import DEV_KEY
from tests.integration.test_ordering import keyed_events
from tests.support import KeyOrderReceiver, eventually, one_in

pytestmark = pytest.mark.timeout(900)

EVENTS = int(os.environ.get("HERALD_FAULT_ORDERED_EVENTS", "10000"))
KEYS = 100
BATCH = 1000  # the batch route's largest


@pytest.fixture
async def receiver() -> AsyncIterator[KeyOrderReceiver]:
    started = await KeyOrderReceiver(fail_first=one_in(10)).start()
    yield started
    await started.stop()


async def test_worker_killed_mid_run_keeps_every_keys_order(
    herald: Herald, receiver: KeyOrderReceiver
) -> None:
    url = herald.start("api", "api", 0)
    herald.start("w1", "worker", 1)
    event_type = f"fault.ordered{int(time.time())}"
    headers = {"Authorization": f"Bearer {DEV_KEY}"}
    async with aiohttp.ClientSession(base_url=url, headers=headers) as session:
        body = {
            "name": "ordered",
            "webhook": {"url": f"{receiver.url}/ordered"},
            "events": [event_type],
            "ordering": "per_key",
        }
        async with session.post("/v2/event-destinations", json=body) as response:
            assert response.status == 201, await response.text()
            destination_id = (await response.json())["id"]
        started_s = time.monotonic()
        keys = [f"key-{n}" for n in range(KEYS)]
        events = keyed_events(event_type, EVENTS, keys)
        acked = 0
        for start in range(0, EVENTS, BATCH):
            async with session.post(
                "/v2/events/batch", json={"events": events[start : start + BATCH]}
            ) as response:
                assert response.status == 202, await response.text()
                acked += (await response.json())["accepted"]
        await eventually(
            lambda: receiver.count("/ordered") >= EVENTS // 5,
            timeout_s=300,
            interval_s=0.2,
            what="a fifth of the deliveries",
        )
        herald.kill("w1")
        killed_at = receiver.count("/ordered")
        herald.start("w1-again", "worker", 1)
        await eventually(
            lambda: receiver.count("/ordered") == acked,
            timeout_s=600,
            interval_s=0.5,
            what=f"{acked} deliveries",
        )
        elapsed_s = time.monotonic() - started_s
        async with session.delete(f"/v2/event-destinations/{destination_id}"):
            pass
    lost = acked - receiver.count("/ordered")
    RESULTS.append(
        {
            "scenario": "per-key order, worker kill -9",
            "sent": EVENTS,
            "acknowledged": acked,
            "delivered": receiver.count("/ordered"),
            "lost": lost,
            "duplicated": receiver.duplicates,
            "keys": KEYS,
            "out_of_order": len(receiver.out_of_order),
            "delivered_at_kill": killed_at,
            "requests": receiver.requests,
            "seconds": round(elapsed_s, 1),
        }
    )
    assert lost == 0
    assert receiver.out_of_order == []
    assert killed_at < acked, "the kill came after the last delivery: the test proved nothing"
