"""The delivery log end to end: a receiver that fails k times then succeeds has k+1 attempts
on record at their scheduled times, and the log pages through every delivery exactly once,
newest first.

The stack's schedule: tier n waits 0.2 s * 2^(n-1), 3 retries.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from pipeline.ids import new_id
from tests.integration.api_client import Api
from tests.support import Received, Receiver, eventually

FAILURES = 2
DELIVERIES = 7
PAGE = 3


@dataclass
class FlakyReceiver(Receiver):
    """Answers 503 to the first `failures` requests, then 200."""

    failures: int = FAILURES

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(Received(request.path, dict(request.headers), await request.read()))
        status = 503 if len(self.requests) <= self.failures else 200
        return web.Response(status=status, text="ok" if status == 200 else "busy")


async def _delivery(api: Api, destination_id: str) -> dict[str, Any] | None:
    _, page = await api.call("GET", f"/v2/event-destinations/{destination_id}/event-deliveries")
    return page["data"][0] if page["data"] else None


async def test_k_failures_then_success_are_k_plus_one_attempts_on_schedule(api: Api) -> None:
    flaky = await FlakyReceiver().start()
    try:
        event_type = f"flaky.{new_id('t_').lower()}"
        destination = await api.create_webhook(f"{flaky.url}/k", [event_type])
        await api.publish(event_type, {"k": FAILURES})
        await eventually(lambda: len(flaky.requests) == FAILURES + 1, what="k+1 requests")

        async def succeeded() -> dict[str, Any] | None:
            delivery = await _delivery(api, destination["id"])
            return delivery if delivery and delivery["status"] == "succeeded" else None

        delivery = await eventually(succeeded, what="the delivery to be recorded as succeeded")
        status, detail = await api.call("GET", f"/v2/event-deliveries/{delivery['id']}")
    finally:
        await flaky.stop()
    assert status == 200
    assert delivery["attempt_count"] == FAILURES + 1
    attempts = detail["attempts"]
    assert [(a["attempt"], a["outcome"], a["response_status"]) for a in attempts] == [
        (0, "failed", 503),
        (1, "failed", 503),
        (2, "success", 200),
    ]
    assert {r.headers["webhook-id"] for r in flaky.requests} == {delivery["id"]}
    # Each retry came no sooner than its tier's delay (generous upper bound).
    arrivals = [r.received_at for r in flaky.requests]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    for gap, due_s in zip(gaps, (0.2, 0.4), strict=True):
        assert due_s - 0.01 <= gap < due_s + 5, gaps


async def test_the_delivery_log_pages_through_every_delivery_once(
    api: Api, receiver: Receiver
) -> None:
    event_type = f"paged.{new_id('t_').lower()}"
    destination = await api.create_webhook(f"{receiver.url}/paged", [event_type])
    published = [await api.publish(event_type, {"n": n}) for n in range(DELIVERIES)]
    path = f"/v2/event-destinations/{destination['id']}/event-deliveries"

    async def all_indexed() -> bool:
        _, page = await api.call("GET", f"{path}?limit=100")
        return len(page["data"]) == DELIVERIES

    await eventually(all_indexed, what="every delivery in the index")
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while pages <= DELIVERIES:  # bounded: more pages than deliveries would be a bug
        query = f"?limit={PAGE}" + (f"&cursor={cursor}" if cursor else "")
        status, page = await api.call("GET", path + query)
        assert status == 200, page
        assert len(page["data"]) <= PAGE
        seen.extend(page["data"])
        pages += 1
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert pages == -(-DELIVERIES // PAGE)
    assert len({d["id"] for d in seen}) == len(seen) == DELIVERIES
    assert {d["event_id"] for d in seen} == set(published)
    # Newest first (the keyset pagination orders by created_at, then id).
    keys = [(d["created_at"], d["id"]) for d in seen]
    assert keys == sorted(keys, reverse=True)
