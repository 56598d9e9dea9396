"""Protecting receivers and each other: a destination's `rate_limit`, end to end.

The destinations of each test share one `deliveries` partition (client-chosen ids), so
what one is made to wait for could, done wrong, hold up the other.
"""

from __future__ import annotations

from typing import Any

from tests.integration.api_client import Api
from tests.support import Receiver, eventually, same_partition_ids


async def _publish_many(api: Api, event_type: str, count: int) -> None:
    events: list[Any] = [{"type": event_type, "data": {"i": i}} for i in range(count)]
    status, body = await api.call("POST", "/v2/events/batch", {"events": events})
    assert (status, body["accepted"]) == (202, count), body


async def test_rate_limit_is_validated_returned_and_patchable(api: Api, receiver: Receiver) -> None:
    for bad in (0, -1, 2.5, "5", True, 100_001):
        status, body = await api.call(
            "POST",
            "/v2/event-destinations",
            {"name": "r", "webhook": {"url": receiver.url}, "events": ["*"], "rate_limit": bad},
        )
        assert status == 400, bad
        assert list(body["errors"]) == ["rate_limit"], body
    created = await api.create_webhook(receiver.url, ["rate.check"], rate_limit=7)
    assert created["rate_limit"] == 7
    path = f"/v2/event-destinations/{created['id']}"
    status, body = await api.call("PATCH", path, {"rate_limit": 3})
    assert (status, body["rate_limit"]) == (200, 3)
    status, body = await api.call("GET", path)
    assert (status, body["rate_limit"]) == (200, 3)
    status, body = await api.call("PATCH", path, {"rate_limit": None})
    assert (status, body["rate_limit"]) == (200, None)


async def test_rate_limit_paces_its_destination_and_no_other(api: Api, receiver: Receiver) -> None:
    count, rate = 20, 5
    limited_id, other_id = same_partition_ids(2, "evtd_pace")
    await api.create_webhook(
        f"{receiver.url}/limited", ["paced.thing"], id=limited_id, rate_limit=rate
    )
    await api.create_webhook(f"{receiver.url}/other", ["paced.thing"], id=other_id)
    await _publish_many(api, "paced.thing", count)
    await eventually(
        lambda: len(receiver.bodies("/other")) == count, timeout_s=10, what="the unlimited one"
    )
    # The unlimited destination was not held to the limited one's pace.
    assert len(receiver.bodies("/limited")) < count
    await eventually(
        lambda: len(receiver.bodies("/limited")) == count, timeout_s=20, what="the limited one"
    )
    arrivals = [r.received_at for r in receiver.requests if r.path == "/limited"]
    # A burst of `rate` (one second's worth) goes at once, the rest at `rate` per second.
    burst = rate
    assert arrivals[-1] - arrivals[0] >= 0.9 * (count - burst) / rate
