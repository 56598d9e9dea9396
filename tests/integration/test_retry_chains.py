"""One attempt chain per delivery (issue 12, C17): a manual retry takes only a `failed`
delivery, and a replay skips deliveries still being attempted, so no tier copy fires beside
a second chain under the same delivery id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from pipeline import ids
from tests.integration.api_client import Api
from tests.support import Receiver, eventually


@pytest.fixture
async def slow_receiver() -> AsyncIterator[Receiver]:
    """Fails every attempt by timing out (delivery timeout 2 s in the test stack), so a
    chain of four attempts stays `retrying` for several seconds."""
    server = await Receiver(status=500, delay_s=4).start()
    yield server
    await server.stop()


async def _delivery(api: Api, destination_id: str, status: str) -> dict[str, Any]:
    async def in_status() -> dict[str, Any] | None:
        _, log = await api.call("GET", f"/v2/event-destinations/{destination_id}/event-deliveries")
        found = [d for d in log["data"] if d["status"] == status]
        return found[0] if found else None

    found: dict[str, Any] = await eventually(in_status, timeout_s=30, what=f"a {status} delivery")
    return found


def _event_type() -> str:
    return f"chain_check.{ids.new_id('t').lower()}"


async def test_a_succeeded_delivery_is_not_retried(api: Api, receiver: Receiver) -> None:
    event_type = _event_type()
    destination = await api.create_webhook(f"{receiver.url}/ok", [event_type])
    await api.publish(event_type)
    delivery = await _delivery(api, destination["id"], "succeeded")
    status, body = await api.call("POST", f"/v2/event-deliveries/{delivery['id']}/retry")
    assert status == 409, body
    assert body["errors"][0]["code"] == "delivery_not_failed"
    assert "replay" in body["errors"][0]["message"]
    await api.call("DELETE", f"/v2/event-destinations/{destination['id']}")


async def test_a_failed_delivery_is_retried_once_and_ends_succeeded(
    api: Api, receiver: Receiver
) -> None:
    event_type = _event_type()
    receiver.status = 500
    destination = await api.create_webhook(f"{receiver.url}/flaky", [event_type])
    await api.publish(event_type)
    delivery = await _delivery(api, destination["id"], "failed")  # 1 + 3 retries, all 500
    receiver.status = 200
    path = f"/v2/event-deliveries/{delivery['id']}/retry"
    status, body = await api.call("POST", path)
    assert (status, body["status"]) == (202, "retrying"), body
    status, body = await api.call("POST", path)  # its chain is live again
    assert status == 409, body
    done = await _delivery(api, destination["id"], "succeeded")
    assert done["attempt_count"] == 5
    assert [r.path for r in receiver.requests].count("/flaky") == 5
    await api.call("DELETE", f"/v2/event-destinations/{destination['id']}")


async def test_a_retrying_delivery_is_not_retried_nor_replayed(
    api: Api, receiver: Receiver, slow_receiver: Receiver
) -> None:
    event_type = _event_type()
    slow = await api.create_webhook(f"{slow_receiver.url}/slow", [event_type])
    fine = await api.create_webhook(f"{receiver.url}/fine", [event_type])
    event_id = await api.publish(event_type)
    retrying = await _delivery(api, slow["id"], "retrying")
    await _delivery(api, fine["id"], "succeeded")

    status, body = await api.call("POST", f"/v2/event-deliveries/{retrying['id']}/retry")
    assert status == 409, body
    assert body["errors"][0]["code"] == "delivery_not_failed"
    replay = f"/v2/events/{event_id}/replay"
    status, body = await api.call("POST", replay, {"destination_id": slow["id"]})
    assert status == 409, body
    assert body["errors"][0]["code"] == "delivery_in_progress"
    status, body = await api.call("POST", replay)
    assert status == 202, body
    assert body["skipped_destination_ids"] == [slow["id"]]
    # The finished one is delivered again; the live one only by its own chain.
    await eventually(lambda: len(receiver.bodies("/fine")) == 2, what="the replay to /fine")
    await _delivery(api, slow["id"], "failed")
    assert len(slow_receiver.bodies("/slow")) == 4  # one chain: the first attempt, 3 retries
    for destination in (slow, fine):
        await api.call("DELETE", f"/v2/event-destinations/{destination['id']}")
