"""Run after every other integration test (see conftest: the `end_of_session` marker).

- With the broker down, publishing answers 503 with Retry-After, and nothing of what was
  refused turns up later (README: a 2xx means the event is in Kafka; otherwise nothing
  is accepted).
- The worker killed with SIGKILL mid-stream loses nothing (the short version of the fault
  suite's scenarios, so `make test` guards at-least-once; `make test-faults` has the long
  ones).
- Once the suite has run, no delivery is stuck: none is `pending` in the index with no
  attempt scheduled, a minute or more after it was routed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter

import asyncpg
import orjson
import pytest
from aiohttp import web

from tests.integration.api_client import Api
from tests.integration.conftest import Services, Stack, _script, service_env
from tests.support import Received, Receiver, eventually

pytestmark = [pytest.mark.end_of_session, pytest.mark.timeout(600)]

EVENTS = 500
SUBSCRIBERS = 3
BATCH = 250


async def _refused_while_down(api: Api, event_type: str) -> list[str]:
    """Publish one event and a batch of two, with ids of our own; each must be a 503."""
    ids = [f"evt_down_{uuid.uuid4().hex}" for _ in range(3)]
    calls = [
        ("/v2/events", {"id": ids[0], "type": event_type, "data": {}}),
        (
            "/v2/events/batch",
            {"events": [{"id": i, "type": event_type, "data": {}} for i in ids[1:]]},
        ),
    ]
    for path, body in calls:
        async with api.session.post(path, json=body) as response:
            assert response.status == 503, (path, await response.text())
            assert int(response.headers["Retry-After"]) >= 1
    return ids


async def test_broker_down_is_503_with_retry_after_and_nothing_accepted(
    api: Api, receiver: Receiver
) -> None:
    event_type = f"broker.down{time.time_ns()}"
    await api.create_webhook(f"{receiver.url}/down", [event_type])
    kafka = service_env()["kafka/kafka.sh"]
    await asyncio.to_thread(_script, "kafka/kafka.sh", "stop", env=kafka)
    try:
        refused = await _refused_while_down(api, event_type)
    finally:
        await asyncio.to_thread(_script, "kafka/kafka.sh", "start", env=kafka)

    async def published_again() -> str | None:
        status, body = await api.call("POST", "/v2/events", {"type": event_type, "data": {}})
        return str(body["id"]) if status == 202 else None

    after = await eventually(published_again, timeout_s=120, interval_s=1, what="the API back")

    async def indexed() -> bool:
        return (await api.call("GET", f"/v2/events/{after}"))[0] == 200

    await eventually(lambda: receiver.bodies("/down"), timeout_s=120, what="a delivery after")
    await eventually(indexed, timeout_s=60, what="the later event in the index")
    for event_id in refused:
        assert (await api.call("GET", f"/v2/events/{event_id}"))[0] == 404, event_id
    assert {b["id"] for b in receiver.bodies("/down")} == {after}


class SlowReceiver(Receiver):
    """Counts a delivery once it answers it, 0.2 s after it arrived, and only if the
    sender is still there: a request in flight when the worker dies does not count, so
    it must be delivered again."""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(0.2)  # a slow receiver, not synchronization
        if request.transport is not None and not request.transport.is_closing():
            self.requests.append(Received(request.path, dict(request.headers), body))
        return web.Response(text="ok")


def _delivered(receiver: Receiver) -> Counter[tuple[str, str]]:
    return Counter((r.path, orjson.loads(r.body)["id"]) for r in receiver.requests)


async def _publish(api: Api, event_type: str) -> set[str]:
    acked: set[str] = set()
    for start in range(0, EVENTS, BATCH):
        events = [{"type": event_type, "data": {"n": n}} for n in range(start, start + BATCH)]
        status, body = await api.call("POST", "/v2/events/batch", {"events": events})
        assert status == 202, body
        acked.update(item["id"] for item in body["data"] if item["status"] == "accepted")
    return acked


async def test_worker_killed_mid_stream_loses_nothing(api: Api, stack: Stack) -> None:
    receiver = await SlowReceiver().start()
    try:
        await _kill_mid_stream(api, stack, receiver)
    finally:
        await receiver.stop()


async def _kill_mid_stream(api: Api, stack: Stack, receiver: Receiver) -> None:
    event_type = f"crash.short{time.time_ns()}"
    for n in range(SUBSCRIBERS):
        await api.create_webhook(f"{receiver.url}/s{n}", [event_type])
    acked = await _publish(api, event_type)
    expected = {(f"/s{n}", e) for n in range(SUBSCRIBERS) for e in acked}
    await eventually(
        lambda: len(receiver.requests) >= len(expected) * 3 // 5,
        timeout_s=120,
        what="three fifths of the deliveries",
    )
    await asyncio.to_thread(stack.kill_and_restart_worker)
    at_kill = set(_delivered(receiver))
    await eventually(
        lambda: expected <= set(_delivered(receiver)),
        timeout_s=180,
        interval_s=0.5,
        what=f"all {len(expected)} deliveries after the restart",
    )
    assert len(acked) == EVENTS
    assert not expected <= at_kill, "everything was delivered before the kill: proved nothing"


# A delivery is `pending` until its first attempt is indexed; one still pending with no
# attempt scheduled a minute after it was routed was dropped without a final status.
STUCK = """
select destination_id, count(*) as deliveries, min(created_at) as oldest from deliveries
where status = 'pending' and attempts = 0 and next_attempt_at is null
  and created_at < now() - interval '1 minute'
group by destination_id order by count(*) desc"""


async def test_no_delivery_is_left_pending(services: Services, stack: Stack) -> None:
    connection = await asyncpg.connect(services.database_url)
    left: list[asyncpg.Record] = []

    async def nothing_stuck() -> bool:
        left[:] = await connection.fetch(STUCK)
        return not left

    try:
        # The index may lag the last attempts by a little: give it that.
        with contextlib.suppress(AssertionError):
            await eventually(nothing_stuck, timeout_s=30, interval_s=1, what="no stuck delivery")
    finally:
        await connection.close()
    assert [dict(r) for r in left] == []
