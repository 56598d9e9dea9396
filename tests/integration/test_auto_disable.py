"""Auto-disable, end to end (issue 12, C15 and C16): it follows the destination's own
failures each time they happen, and never an event's. The test stack disables after 2
deliveries in a row dead-lettered."""

from __future__ import annotations

import uuid
from typing import Any

from pipeline import ids
from tests.integration.api_client import Api
from tests.integration.peers import Peers
from tests.integration.sinks.conftest import Aws
from tests.support import Receiver, eventually


async def _status(api: Api, destination_id: str) -> str:
    _, body = await api.call("GET", f"/v2/event-destinations/{destination_id}")
    return str(body["status"])


async def _inactive(api: Api, destination_id: str) -> None:
    async def inactive() -> bool:
        return await _status(api, destination_id) == "inactive"

    await eventually(inactive, timeout_s=30, what="the destination disabled")


async def test_a_destination_enabled_again_is_disabled_again_by_a_second_410(
    api: Api, receiver: Receiver
) -> None:
    receiver.status = 410
    event_type = f"gone_check.{ids.new_id('t').lower()}"
    destination = await api.create_webhook(f"{receiver.url}/gone", [event_type])
    path = f"/v2/event-destinations/{destination['id']}"
    await api.publish(event_type)
    await _inactive(api, destination["id"])
    status, body = await api.call("POST", f"{path}/enable")
    assert (status, body["status"]) == (200, "pending_verification"), body
    await api.publish(event_type)
    await _inactive(api, destination["id"])  # it used to stay enabled for good
    _, body = await api.call("GET", path)
    assert "410" in body["status_reason"]
    assert len(receiver.bodies("/gone")) == 2
    await api.call("DELETE", path)


async def test_events_an_eventbridge_bus_cannot_take_never_disable_it(
    api: Api, peers: Peers
) -> None:
    aws = Aws(peers.aws_url)
    name = f"herald-reject-{uuid.uuid4().hex[:12]}"
    aws.client("events").create_event_bus(Name=name)
    prefix = f"long_type_{uuid.uuid4().hex[:8]}"
    status, destination = await api.call(
        "POST",
        "/v2/event-destinations",
        {
            "name": "bus",
            "type": "aws_eventbridge",
            "aws_eventbridge": {
                "event_bus_name": name,
                "region": aws.region,
                "access_key_id": aws.key_id,
                "secret_access_key": aws.secret,
            },
            "events": [f"{prefix}.*"],
        },
    )
    assert status == 201, destination
    long_type = f"{prefix}.{'x' * (150 - len(prefix) - 1)}"  # Herald takes up to 200
    assert len(long_type) == 150
    for _ in range(3):  # more than the 2 dead letters that disable a destination
        await api.publish(long_type)

    async def failed() -> list[dict[str, Any]] | None:
        _, log = await api.call(
            "GET", f"/v2/event-destinations/{destination['id']}/event-deliveries?status=failed"
        )
        return log["data"] if len(log["data"]) == 3 else None

    deliveries = await eventually(failed, timeout_s=30, what="three dead-lettered deliveries")
    _, first = await api.call("GET", f"/v2/event-deliveries/{deliveries[0]['id']}")
    [attempt] = first["attempts"]  # refused before sending: no retries either
    assert "DetailType" in attempt["error"]
    # Not disabled: an event it can take is delivered, and verifies it (a destination
    # disabled meanwhile would stay inactive and get nothing).
    await api.publish(f"{prefix}.fine")

    async def active() -> bool:
        return await _status(api, destination["id"]) == "active"

    await eventually(active, timeout_s=30, what="the destination verified, not disabled")
    await api.call("DELETE", f"/v2/event-destinations/{destination['id']}")
