"""Deliveries whose destination went away end `canceled` (issue 12, B12), and a destination
created again under a deleted one's id starts a life of its own (A1, within one tenant)."""

from __future__ import annotations

import time
from typing import Any

from tests.integration.api_client import Api
from tests.support import Receiver, eventually


async def _delivery(api: Api, delivery_id: str) -> dict[str, Any] | None:
    status, body = await api.call("GET", f"/v2/event-deliveries/{delivery_id}")
    return body if status == 200 else None


async def _final(api: Api, delivery_id: str, status: str) -> dict[str, Any] | None:
    body = await _delivery(api, delivery_id)
    return body if body is not None and body["status"] == status else None


async def test_deliveries_of_a_disabled_destination_end_canceled(api: Api) -> None:
    failing = await Receiver(status=500, delay_s=0.5).start()
    try:
        destination = await api.create_webhook(f"{failing.url}/c", ["cancel_check.*"])
        await api.publish("cancel_check.created", {})
        await eventually(lambda: failing.requests, what="the first attempt")
        delivery_id = failing.requests[0].headers["webhook-id"]
        path = f"/v2/event-destinations/{destination['id']}/disable"
        assert (await api.call("POST", path))[0] == 200
        canceled = await eventually(
            lambda: _final(api, delivery_id, "canceled"), timeout_s=30, what="canceled"
        )
        assert canceled["next_attempt_at"] is None
        assert canceled["attempt_count"] == len(
            [r for r in failing.requests if r.headers["webhook-id"] == delivery_id]
        )
        last = canceled["attempts"][-1]
        assert (last["outcome"], last["error"]) == ("canceled", "destination inactive")
        log_path = f"/v2/event-destinations/{destination['id']}/event-deliveries?status=canceled"
        status, log = await api.call("GET", log_path)
        assert status == 200 and [d["id"] for d in log["data"]] == [delivery_id]
    finally:
        await failing.stop()


async def test_an_id_created_again_gets_nothing_of_its_predecessor(api: Api) -> None:
    failing = await Receiver(status=500, delay_s=0.5).start()
    healthy = await Receiver().start()
    try:
        destination_id = f"evtd_again_{time.time_ns()}"
        await api.create_webhook(f"{failing.url}/old", ["again_check.*"], id=destination_id)
        old_event = await api.publish("again_check.created", {"life": 1})
        await eventually(lambda: failing.requests, what="the first attempt")
        old_delivery = failing.requests[0].headers["webhook-id"]
        assert (await api.call("DELETE", f"/v2/event-destinations/{destination_id}"))[0] == 200
        await api.create_webhook(f"{healthy.url}/new", ["again_check.*"], id=destination_id)
        new_event = await api.publish("again_check.created", {"life": 2})
        await eventually(
            lambda: _final(api, old_delivery, "canceled"), timeout_s=30, what="canceled"
        )
        await eventually(lambda: healthy.requests, what="the new destination's own event")
        assert [b["id"] for b in healthy.bodies()] == [new_event]
        assert old_event != new_event
        # The old delivery can no longer be retried (its destination is gone), and the new
        # destination's log holds only its own deliveries.
        status, body = await api.call("POST", f"/v2/event-deliveries/{old_delivery}/retry")
        assert (status, body["errors"][0]["code"]) == (422, "destination_unusable")

        async def new_log() -> Any:
            path = f"/v2/event-destinations/{destination_id}/event-deliveries"
            _, log = await api.call("GET", path)
            return log["data"] if any(d["status"] == "succeeded" for d in log["data"]) else None

        [only] = await eventually(new_log, what="the new delivery indexed")
        assert only["event_id"] == new_event
        # Its status was set by its own first success, not by the old life's verification.
        _, now = await api.call("GET", f"/v2/event-destinations/{destination_id}")
        assert now["status"] == "active"
        # A replay of the old event to the id reaches the new destination as a delivery of
        # its own; the old life's canceled delivery stays canceled (restarting it would leave
        # it `retrying` for good: nothing attempts a delivery of a deleted destination).
        replay = {"destination_id": destination_id}
        status, _ = await api.call("POST", f"/v2/events/{old_event}/replay", replay)
        assert status == 202
        await eventually(
            lambda: old_event in [b["id"] for b in healthy.bodies()], what="the replay delivered"
        )
        assert await _final(api, old_delivery, "canceled")
    finally:
        await failing.stop()
        await healthy.stop()
