"""Publishing, fan-out, retries, dead letters, auto-disable and the delivery log, end to end.

The stack runs with a shrunk retry schedule (0.2 s * 2^(n-1), 3 retries) and auto-disables
a destination after 2 deliveries in a row exhausted their retries.
"""

from __future__ import annotations

import time
from typing import Any

from tests.integration.api_client import Api
from tests.support import Receiver, eventually, same_partition_ids

HOL_EVENTS = 40


async def _delivery_log(api: Api, destination_id: str) -> list[dict[str, Any]]:
    status, body = await api.call(
        "GET", f"/v2/event-destinations/{destination_id}/event-deliveries"
    )
    assert status == 200, body
    return list(body["data"])


async def test_fan_out_and_the_delivery_log(api: Api, receiver: Receiver) -> None:
    first = await api.create_webhook(f"{receiver.url}/a", ["invoice.*"])
    second = await api.create_webhook(f"{receiver.url}/b", ["invoice.paid"])
    await api.create_webhook(f"{receiver.url}/c", ["other.thing"])
    event_id = await api.publish("invoice.paid", {"amount": 42})
    await eventually(lambda: len(receiver.requests) >= 2, what="both subscribers")
    assert sorted(r.path for r in receiver.requests) == ["/a", "/b"]

    async def indexed() -> list[dict[str, Any]]:
        log = await _delivery_log(api, first["id"])
        return [d for d in log if d["status"] == "succeeded"]

    [delivery] = await eventually(indexed, timeout_s=10, what="the delivery in the log")
    assert (delivery["event_id"], delivery["attempt_count"]) == (event_id, 1)
    status, detail = await api.call("GET", f"/v2/event-deliveries/{delivery['id']}")
    assert status == 200
    [attempt] = detail["attempts"]
    assert (attempt["outcome"], attempt["response_status"], attempt["response_body"]) == (
        "success",
        200,
        "ok",
    )
    assert attempt["latency_ms"] >= 0
    status, event = await api.call("GET", f"/v2/events/{event_id}")
    assert (status, event["data"]) == (200, {"amount": 42})
    status, events = await api.call("GET", "/v2/events?type=invoice.paid&limit=100")
    assert event_id in [e["id"] for e in events["data"]]

    async def in_second_log() -> list[str]:
        log = await _delivery_log(api, second["id"])
        return [d["event_id"] for d in log if d["status"] == "succeeded"]

    assert await eventually(in_second_log, timeout_s=10, what="the second log") == [event_id]


async def test_retries_on_schedule_then_dead_letter_and_auto_disable(api: Api) -> None:
    failing = await Receiver(status=500).start()
    watcher = await Receiver().start()
    try:
        destination = await api.create_webhook(f"{failing.url}/f", ["job.failed"])
        await api.create_webhook(f"{watcher.url}/w", ["event_destination.disabled"])
        await api.publish("job.failed", {"n": 1})
        await eventually(lambda: len(failing.requests) >= 4, what="1 attempt + 3 retries")
        ids = {r.headers["webhook-id"] for r in failing.requests}
        assert len(ids) == 1, "the delivery id must stay the same across retries"
        stamps = [int(r.headers["webhook-timestamp"]) for r in failing.requests]
        assert stamps == sorted(stamps)

        async def failed() -> list[dict[str, Any]]:
            return [
                d for d in await _delivery_log(api, destination["id"]) if d["status"] == "failed"
            ]

        [delivery] = await eventually(failed, what="the delivery to be dead-lettered")
        assert delivery["attempt_count"] == 4
        _, detail = await api.call("GET", f"/v2/event-deliveries/{delivery['id']}")
        assert [a["outcome"] for a in detail["attempts"]] == ["failed"] * 4
        assert all(a["response_status"] == 500 for a in detail["attempts"])
        # A second dead letter in a row disables the destination.
        await api.publish("job.failed", {"n": 2})

        async def inactive() -> dict[str, Any] | None:
            _, body = await api.call("GET", f"/v2/event-destinations/{destination['id']}")
            return body if body["status"] == "inactive" else None

        disabled = await eventually(inactive, what="auto-disable")
        assert "exhausted their retries" in disabled["status_reason"]
        await eventually(lambda: watcher.requests, what="event_destination.disabled")
        assert watcher.bodies()[0]["data"]["destination_id"] == destination["id"]
    finally:
        await failing.stop()
        await watcher.stop()


async def test_retry_waits_for_its_due_time(api: Api) -> None:
    flaky = await Receiver(status=503).start()
    try:
        await api.create_webhook(f"{flaky.url}/x", ["flaky.thing"])
        await api.publish("flaky.thing")
        await eventually(lambda: len(flaky.requests) >= 3, what="two retries")
        arrivals = [r.received_at for r in flaky.requests[:3]]
        # Tier 1 waits 0.2 s and tier 2 0.4 s; never sooner (generous upper bound).
        assert 0.19 <= arrivals[1] - arrivals[0] < 5
        assert 0.39 <= arrivals[2] - arrivals[1] < 5
    finally:
        await flaky.stop()


async def test_manual_retry_and_replay_keep_the_delivery_id(api: Api, receiver: Receiver) -> None:
    receiver.status = 500
    destination = await api.create_webhook(f"{receiver.url}/r", ["order.shipped"])
    event_id = await api.publish("order.shipped", {"o": 1})

    async def failed() -> list[dict[str, Any]]:
        return [d for d in await _delivery_log(api, destination["id"]) if d["status"] == "failed"]

    [delivery] = await eventually(failed, what="dead letter")
    receiver.status = 200
    before = len(receiver.requests)
    status, _ = await api.call("POST", f"/v2/event-deliveries/{delivery['id']}/retry")
    assert status == 202
    await eventually(lambda: len(receiver.requests) > before, what="the manual retry")
    assert receiver.requests[-1].headers["webhook-id"] == delivery["id"]

    async def succeeded() -> bool:
        _, body = await api.call("GET", f"/v2/event-deliveries/{delivery['id']}")
        return bool(body["status"] == "succeeded")

    await eventually(succeeded, what="the log to show the retry succeeded")
    before = len(receiver.requests)
    status, body = await api.call("POST", f"/v2/events/{event_id}/replay")
    assert (status, body["replayed"]) == (202, True)
    await eventually(lambda: len(receiver.requests) > before, what="the replay")
    assert receiver.requests[-1].headers["webhook-id"] == delivery["id"]
    late = await api.create_webhook(f"{receiver.url}/late", ["never.matches"])
    status, _ = await api.call(
        "POST", f"/v2/events/{event_id}/replay", {"destination_id": late["id"]}
    )
    assert status == 202
    await eventually(lambda: receiver.bodies("/late"), what="replay to one destination")
    assert receiver.bodies("/late")[0]["id"] == event_id
    status, body = await api.call(
        "POST", f"/v2/events/{event_id}/replay", {"destination_id": "evtd_gone"}
    )
    assert status == 422


async def test_publisher_chosen_id_is_delivered_once(api: Api, receiver: Receiver) -> None:
    await api.create_webhook(f"{receiver.url}/once", ["dedupe.check"])
    body = {"id": f"evt_order-{time.time_ns()}", "type": "dedupe.check", "data": {}}
    for _ in range(3):
        assert (await api.call("POST", "/v2/events", body))[0] == 202
    marker = await api.publish("dedupe.check", {"marker": True})
    await eventually(lambda: any(b["id"] == marker for b in receiver.bodies()), what="marker")
    assert [b["id"] for b in receiver.bodies()].count(body["id"]) == 1


async def test_idempotency_key(api: Api) -> None:
    key = f"key-{time.time_ns()}"
    body = {"type": "idem.check", "data": {"a": 1}}
    first = await api.call("POST", "/v2/events", body, headers={"Idempotency-Key": key})
    again = await api.call("POST", "/v2/events", body, headers={"Idempotency-Key": key})
    assert first[0] == again[0] == 202
    assert first[1]["id"] == again[1]["id"]
    status, error = await api.call(
        "POST", "/v2/events", {**body, "data": {"a": 2}}, headers={"Idempotency-Key": key}
    )
    assert status == 409
    assert error["errors"][0]["code"] == "idempotency_error"
    created = await api.call(
        "POST",
        "/v2/event-destinations",
        {"name": "i", "webhook": {"url": "https://e.com"}, "events": ["*"]},
        headers={"Idempotency-Key": key + "-d"},
    )
    replayed = await api.call(
        "POST",
        "/v2/event-destinations",
        {"name": "i", "webhook": {"url": "https://e.com"}, "events": ["*"]},
        headers={"Idempotency-Key": key + "-d"},
    )
    assert created == replayed
    assert created[1]["webhook"]["secret"].startswith("whsec_")


async def test_batch_publish_reports_each_item(api: Api, receiver: Receiver) -> None:
    await api.create_webhook(f"{receiver.url}/batch", ["batch.item"])
    items: list[Any] = [{"type": "batch.item", "data": {"i": i}} for i in range(3)]
    items.insert(1, {"type": "Not A Type", "data": {}})
    status, body = await api.call("POST", "/v2/events/batch", {"events": items})
    assert status == 202, body
    assert (body["accepted"], body["rejected"]) == (3, 1)
    assert body["data"][1]["status"] == "rejected"
    assert "type" in body["data"][1]["errors"]
    await eventually(lambda: len(receiver.bodies("/batch")) == 3, what="three deliveries")
    assert sorted(b["data"]["i"] for b in receiver.bodies("/batch")) == [0, 1, 2]
    status, _ = await api.call("POST", "/v2/events/batch", {"events": []})
    assert status == 400


async def test_oversized_event_is_413(api: Api) -> None:
    status, body = await api.call(
        "POST", "/v2/events", {"type": "big.one", "data": {"x": "y" * 300_000}}
    )
    assert status == 413
    assert body["errors"][0]["code"] == "payload_too_large"


async def test_dead_destination_does_not_hold_up_a_healthy_one_on_its_partition(
    api: Api, receiver: Receiver
) -> None:
    # Every attempt to the dead one times out (the stack's delivery timeout is 2 s).
    dead = await Receiver(delay_s=3).start()
    dead_id, healthy_id = same_partition_ids(2, "evtd_dead")
    try:
        await api.create_webhook(f"{dead.url}/dead", ["hol.check"], id=dead_id)
        await api.create_webhook(f"{receiver.url}/fast", ["hol.check"], id=healthy_id)
        started = time.monotonic()
        for i in range(HOL_EVENTS):
            await api.publish("hol.check", {"i": i})
        await eventually(
            lambda: len(receiver.bodies("/fast")) == HOL_EVENTS,
            timeout_s=15,
            what="every delivery to the healthy destination",
        )
        healthy_s = time.monotonic() - started
        dead_started = len(dead.requests)
    finally:
        await dead.stop()
    print(
        f"healthy: {HOL_EVENTS} delivered in {healthy_s:.2f} s ({HOL_EVENTS / healthy_s:.1f}/s); "
        f"dead, same partition: {dead_started} attempts started, none finished "
        "(at most 8/s can end: 16 in flight per destination, 2 s timeout)"
    )
    # Had the dead destination blocked the partition, the healthy deliveries behind it
    # would have waited a 2 s timeout per batch of 16: at least this long.
    assert healthy_s < 2 * HOL_EVENTS / 16 or dead_started < HOL_EVENTS
