"""Protecting receivers and each other, end to end: a destination's `rate_limit`, and the
circuit breaker that spares a dead receiver.

The destinations of each test share one `deliveries` partition (client-chosen ids), so
what one is made to wait for could, done wrong, hold up the other.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from tests.integration.api_client import Api
from tests.integration.conftest import Stack
from tests.integration.test_metrics import delta, scrape
from tests.support import Received, Receiver, eventually, same_partition_ids


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
    # At 2/s the limited destination needs 9 s past its burst: far longer than the unlimited
    # one takes even on a loaded machine, so the check below does not race it.
    count, rate = 20, 2
    limited_id, other_id = same_partition_ids(2, "evtd_pace")
    await api.create_webhook(
        f"{receiver.url}/limited", ["paced.thing"], id=limited_id, rate_limit=rate
    )
    await api.create_webhook(f"{receiver.url}/other", ["paced.thing"], id=other_id)
    await _publish_many(api, "paced.thing", count)
    await eventually(
        lambda: len(receiver.bodies("/other")) == count, timeout_s=60, what="the unlimited one"
    )
    # The unlimited destination was not held to the limited one's pace.
    assert len(receiver.bodies("/limited")) < count
    await eventually(
        lambda: len(receiver.bodies("/limited")) == count, timeout_s=90, what="the limited one"
    )
    arrivals = [r.received_at for r in receiver.requests if r.path == "/limited"]
    # A burst of `rate` (one second's worth) goes at once, the rest at `rate` per second.
    burst = rate
    assert arrivals[-1] - arrivals[0] >= 0.9 * (count - burst) / rate


async def _first_probe(dead: Receiver) -> Received:
    """Once open, the receiver hears nothing until the 1 s cool-down ends and a probe goes."""
    first = await eventually(lambda: dead.requests and dead.requests[0], what="attempts")
    probe: Received = await eventually(
        lambda: next((r for r in dead.requests if r.received_at - first.received_at >= 0.9), None),
        timeout_s=60,
        what="the first probe",
    )
    return probe


async def test_circuit_breaker_spares_a_dead_receiver_and_recovers(
    api: Api, receiver: Receiver, stack: Stack
) -> None:
    """The stack opens a circuit after 10 failures in a row, for 1 s, doubling per failed
    probe (conftest.py)."""
    count, threshold, in_flight = 60, 10, 16
    dead = await Receiver(status=503).start()
    try:
        await api.create_webhook(f"{dead.url}/dead", ["circuit.check"])
        await api.create_webhook(f"{receiver.url}/alive", ["circuit.check"])
        worker_before = await scrape(stack.worker_url)
        await _publish_many(api, "circuit.check", count)
        probe = await _first_probe(dead)
        before_probe = [r for r in dead.requests if r.received_at < probe.received_at]
        # Without a breaker: 60 deliveries, 4 attempts each. With it: the failures that opened
        # it and those already in flight, then nothing while it is open.
        assert len(before_probe) <= threshold + in_flight, len(before_probe)
        # The other destination of the same events was served meanwhile.
        await eventually(
            lambda: len(receiver.bodies("/alive")) == count,
            timeout_s=60,
            what="the healthy destination",
        )
        dead.status = 200  # the receiver comes back; the next probe closes the circuit
        revived_at = time.monotonic()

        def delivered_after_revival() -> set[str]:
            return {r.headers["webhook-id"] for r in dead.requests if r.received_at >= revived_at}

        await eventually(
            lambda: len(delivered_after_revival()) == count,
            timeout_s=60,
            what="every delivery once the receiver is back",
        )
    finally:
        await dead.stop()
    attempted_while_dead = {
        r.headers["webhook-id"] for r in dead.requests if r.received_at < revived_at
    }
    never_tried = sorted(delivered_after_revival() - attempted_while_dead)
    assert len(never_tried) >= count - threshold - in_flight - 1
    # Put off while the circuit was open, but no attempt counted: the log shows one attempt.
    _, detail = await api.call("GET", f"/v2/event-deliveries/{never_tried[0]}")
    assert detail["status"] == "succeeded", detail
    assert [(a["outcome"], a["response_status"]) for a in detail["attempts"]] == [("success", 200)]
    worker_after = await scrape(stack.worker_url)
    assert delta(worker_before, worker_after, "herald_circuit_changes_total", state="open") >= 2
    assert delta(worker_before, worker_after, "herald_circuit_changes_total", state="closed") >= 1
    assert delta(worker_before, worker_after, "herald_deliveries_deferred_total") > 0


async def test_a_test_event_passes_an_open_circuit(api: Api) -> None:
    """A user who fixed their endpoint checks it with POST …/test: that goes at once rather
    than after the cool-down, and its success closes the circuit for the rest."""
    count = 12
    dead = await Receiver(status=503).start()
    try:
        destination = await api.create_webhook(f"{dead.url}/fixed", ["circuit.fixed"])
        await _publish_many(api, "circuit.fixed", count)
        probe = await _first_probe(dead)
        dead.status = 200
        revived_at = time.monotonic()
        status, _ = await api.call("POST", f"/v2/event-destinations/{destination['id']}/test")
        assert status == 202

        def test_event() -> Received | None:
            bodies = [(r, orjson.loads(r.body)) for r in dead.requests]
            return next((r for r, b in bodies if b["type"] == "event_destination.test"), None)

        arrived = await eventually(test_event, what="the test event")
        # The failed probe doubled the cool-down to 2 s: no automatic probe before then.
        assert arrived.received_at < probe.received_at + 2
        await eventually(
            lambda: (
                len({r.headers["webhook-id"] for r in dead.requests if r.received_at >= revived_at})
                == count + 1
            ),
            timeout_s=60,
            what="every delivery, once the test event closed the circuit",
        )
    finally:
        await dead.stop()


async def test_deliveries_held_too_long_by_an_open_circuit_are_dead_lettered(api: Api) -> None:
    """A circuit that never closes does not keep deliveries forever: after 8 s put off in
    all (the stack's HERALD_CIRCUIT_MAX_HOLD_S) they are dead-lettered, with a recorded
    attempt saying they were not made, and the destination is auto-disabled as usual."""
    count = 30
    dead = await Receiver(status=503).start()
    try:
        destination = await api.create_webhook(f"{dead.url}/gone", ["hold.check"])
        await _publish_many(api, "hold.check", count)

        async def held_too_long() -> list[dict[str, Any]]:
            _, page = await api.call(
                "GET", f"/v2/event-destinations/{destination['id']}/event-deliveries?limit=100"
            )
            failed = [d for d in page["data"] if d["status"] == "failed"]
            details = [
                (await api.call("GET", f"/v2/event-deliveries/{d['id']}"))[1] for d in failed
            ]
            return [d for d in details if d["attempts"][-1]["error"].startswith("not attempted")]

        [given_up, *_] = await eventually(held_too_long, timeout_s=90, what="a held dead letter")
        last = given_up["attempts"][-1]
        assert (last["outcome"], last["response_status"], last["error"]) == (
            "failed",
            None,
            "not attempted: circuit open for too long",
        )

        async def disabled() -> bool:
            _, body = await api.call("GET", f"/v2/event-destinations/{destination['id']}")
            return bool(body["status"] == "inactive")

        await eventually(disabled, timeout_s=60, what="auto-disable")
        # Without the breaker each delivery is attempted 4 times.
        assert len(dead.requests) < count
    finally:
        await dead.stop()


async def test_a_backlogged_destination_does_not_take_every_slot(
    api: Api, receiver: Receiver, stack: Stack
) -> None:
    """The stack has 100 global in-flight slots and puts off deliveries beyond 40
    outstanding per destination (conftest.py). A destination paced to 1/s with a backlog of
    150 would otherwise hold all 100 slots, and the consume loop would wait for them while
    the healthy destination's deliveries sit behind the backlog in the same partition."""
    backlog = 150
    paced_id, healthy_id = same_partition_ids(2, "evtd_hol")
    paced = await api.create_webhook(
        f"{receiver.url}/paced", ["hol.backlog"], id=paced_id, rate_limit=1
    )
    await api.create_webhook(f"{receiver.url}/healthy", ["hol.after"], id=healthy_id)
    worker_before = await scrape(stack.worker_url)
    try:
        await _publish_many(api, "hol.backlog", backlog)
        await eventually(lambda: receiver.bodies("/paced"), what="the paced destination to start")
        await _publish_many(api, "hol.after", 5)
        # Without the bound the healthy deliveries wait for about 50 of the paced ones (50 s
        # at 1/s) to free the slots: a generous deadline still tells the two apart.
        await eventually(
            lambda: len(receiver.bodies("/healthy")) == 5,
            timeout_s=30,
            what="the healthy destination behind the backlog",
        )
        assert len(receiver.bodies("/paced")) < 40  # the backlog is far from done
        worker_after = await scrape(stack.worker_url)
        put_off = delta(
            worker_before, worker_after, "herald_deliveries_deferred_total", reason="queue_full"
        )
        assert put_off >= backlog - 40 - 1
    finally:
        status, _ = await api.call("DELETE", f"/v2/event-destinations/{paced['id']}")
        assert status in (200, 204)
