"""A 429's Retry-After moves the due time, not the attempt count (issue 12, C18).

The test stack retries 3 times, 0.2 s, 0.4 s and 0.8 s apart. A receiver that always
answers 429 with `Retry-After: 1` sends every retry to the last tier (the first whose delay
comes near the hint); each still counts as one retry, so the delivery is attempted 4 times
(it used to jump to the last attempt number at once: 2 attempts, then dead-lettered).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from pipeline import ids
from tests.integration.api_client import Api
from tests.support import Received, Receiver, eventually


class Throttling(Receiver):
    """Answers every POST 429 with a Retry-After."""

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(Received(request.path, dict(request.headers), await request.read()))
        return web.Response(status=429, text="slow down", headers={"Retry-After": "1"})


@pytest.fixture
async def throttling() -> AsyncIterator[Receiver]:
    server = await Throttling().start()
    yield server
    await server.stop()


async def test_a_retry_after_costs_one_retry_each_time(api: Api, throttling: Receiver) -> None:
    event_type = f"throttle_check.{ids.new_id('t').lower()}"
    destination = await api.create_webhook(f"{throttling.url}/busy", [event_type])
    await api.publish(event_type)

    async def dead_lettered() -> dict[str, Any] | None:
        _, log = await api.call(
            "GET", f"/v2/event-destinations/{destination['id']}/event-deliveries?status=failed"
        )
        return log["data"][0] if log["data"] else None

    delivery = await eventually(dead_lettered, timeout_s=30, what="the delivery dead-lettered")
    _, body = await api.call("GET", f"/v2/event-deliveries/{delivery['id']}")
    assert [a["response_status"] for a in body["attempts"]] == [429] * 4
    assert len(throttling.requests) == 4
    # Each retry waited for the hint's tier, not the schedule's own (0.2 s, 0.4 s).
    arrivals = [r.received_at for r in throttling.requests]
    assert all(later - earlier >= 0.79 for earlier, later in itertools.pairwise(arrivals))
    await api.call("DELETE", f"/v2/event-destinations/{destination['id']}")
