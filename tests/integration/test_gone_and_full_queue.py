"""README guarantees end to end: 410 Gone is permanent, and a full queue never dead-letters.

The stack runs with 3 retries on a 0.2 s base delay and puts off deliveries beyond 40
outstanding per destination (conftest.py).
"""

from __future__ import annotations

from typing import Any

from tests.integration.api_client import Api
from tests.integration.conftest import Stack
from tests.integration.test_metrics import delta, scrape
from tests.support import Receiver, eventually, same_partition_ids


async def _deliveries(api: Api, destination_id: str) -> list[dict[str, Any]]:
    status, page = await api.call(
        "GET", f"/v2/event-destinations/{destination_id}/event-deliveries?limit=100"
    )
    assert status == 200, page
    return list(page["data"])


async def test_410_gone_dead_letters_at_once_and_disables_the_destination(api: Api) -> None:
    gone = await Receiver(status=410).start()
    try:
        destination = await api.create_webhook(f"{gone.url}/gone", ["gone.check"])
        await api.publish("gone.check", {"n": 1})

        async def dead_lettered() -> list[dict[str, Any]]:
            return [d for d in await _deliveries(api, destination["id"]) if d["status"] == "failed"]

        [delivery] = await eventually(dead_lettered, timeout_s=60, what="the dead letter")
        _, detail = await api.call("GET", f"/v2/event-deliveries/{delivery['id']}")
        # One attempt, no retry: 410 is permanent (the stack would retry 3 times otherwise).
        assert [(a["outcome"], a["response_status"]) for a in detail["attempts"]] == [
            ("failed", 410)
        ]
        assert len(gone.requests) == 1

        async def disabled() -> dict[str, Any] | None:
            _, body = await api.call("GET", f"/v2/event-destinations/{destination['id']}")
            return body if body["status"] == "inactive" else None

        # At once: the stack disables after 2 dead letters in a row, and this was the first.
        await eventually(disabled, timeout_s=60, what="the destination to be disabled")
    finally:
        await gone.stop()


async def test_a_full_queue_never_dead_letters(api: Api, receiver: Receiver, stack: Stack) -> None:
    """A destination paced to 1/s with a backlog of 100 has the deliveries beyond what its
    lane may hold (5 s of waiting in the stack, conftest.py) put off again and again; with
    3 retries, counting those as attempts would dead-letter them after the fourth put-off."""
    backlog, bound, retries = 100, 40, 3  # it holds far fewer than 40
    [paced_id] = same_partition_ids(1, "evtd_full")
    paced = await api.create_webhook(
        f"{receiver.url}/paced", ["full.queue"], id=paced_id, rate_limit=1
    )
    before = await scrape(stack.worker_url)
    events = [{"type": "full.queue", "data": {"n": n}} for n in range(backlog)]
    assert (await api.call("POST", "/v2/events/batch", {"events": events}))[0] == 202

    async def put_off_often() -> bool:
        after = await scrape(stack.worker_url)
        put_off = delta(before, after, "herald_deliveries_deferred_total", reason="queue_full")
        return put_off >= (backlog - bound) * (retries + 2)

    await eventually(put_off_often, timeout_s=90, interval_s=0.5, what="repeated put-offs")
    logged = await _deliveries(api, paced["id"])
    assert [d for d in logged if d["status"] == "failed"] == []
    _, body = await api.call("GET", f"/v2/event-destinations/{paced['id']}")
    assert body["status"] != "inactive"
