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


async def _statuses(api: Api, destination_id: str) -> list[dict[str, Any]]:
    _, page = await api.call(
        "GET", f"/v2/event-destinations/{destination_id}/event-deliveries?limit=100"
    )
    return list(page["data"])


async def test_a_dead_destination_costs_one_record_per_scheduled_retry(
    api: Api, receiver: Receiver, stack: Stack
) -> None:
    """The stack opens a circuit after 10 failures in a row, for 1 s, doubling per failed
    probe, and retries 3 times (0.2, 0.4, 0.8 s; conftest.py). While the circuit is open a
    delivery's turn moves it on to its next scheduled retry without an attempt, so each
    delivery makes at most 4 records over its life: the 3 retries and its dead letter.
    (Put off every cool-down instead, as before, each was put off again about every
    second for as long as the circuit stayed open.)"""
    count, threshold, in_flight, tries = 60, 10, 16, 4
    dead = await Receiver(status=503).start()
    try:
        doomed = await api.create_webhook(f"{dead.url}/dead", ["circuit.check"])
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

        async def all_ended() -> list[dict[str, Any]] | None:
            deliveries = await _statuses(api, doomed["id"])
            ended = [d for d in deliveries if d["status"] in ("failed", "canceled")]
            return deliveries if len(ended) == count else None

        # The stack disables a destination after 2 dead letters in a row: the rest of the
        # deliveries are canceled once the view has that.
        await eventually(all_ended, timeout_s=60, what="every dead delivery to end")
    finally:
        await dead.stop()
    worker_after = await scrape(stack.worker_url)
    skipped = delta(worker_before, worker_after, "herald_deliveries_deferred_total")
    failed = delta(
        worker_before,
        worker_after,
        "herald_delivery_attempts_total",
        type="webhook",
        outcome="failed",
    )
    assert skipped > 0 and failed >= threshold
    assert skipped + failed <= count * tries, (skipped, failed)
    assert len(dead.requests) <= threshold + in_flight + 5  # and a few failed probes
    assert delta(worker_before, worker_after, "herald_circuit_changes_total", state="open") >= 1
    _, body = await api.call("GET", f"/v2/event-destinations/{doomed['id']}")
    assert body["status"] == "inactive"


async def test_a_skipped_delivery_says_so_and_a_test_event_closes_the_circuit(api: Api) -> None:
    """A user who fixed their endpoint checks it with POST …/test: that goes at once rather
    than after the cool-down, and its success closes the circuit: new deliveries go at
    once. The deliveries the circuit skipped show why they were not attempted."""
    count = 12
    dead = await Receiver(status=503).start()
    try:
        destination = await api.create_webhook(f"{dead.url}/fixed", ["circuit.fixed"])
        await _publish_many(api, "circuit.fixed", count)
        probe = await _first_probe(dead)
        dead.status = 200
        status, _ = await api.call("POST", f"/v2/event-destinations/{destination['id']}/test")
        assert status == 202

        def test_event() -> Received | None:
            bodies = [(r, orjson.loads(r.body)) for r in dead.requests]
            return next((r for r, b in bodies if b["type"] == "event_destination.test"), None)

        arrived = await eventually(test_event, what="the test event")
        # The failed probe doubled the cool-down to 2 s: no automatic probe before then.
        assert arrived.received_at < probe.received_at + 2
        # Told apart from the skipped ones, which come again on their own schedule now: in
        # a burst they could push it out of any "last few requests" window (CI saw that).
        await api.publish("circuit.fixed", {"after": "fixed"})
        await eventually(
            lambda: any(b["data"] == {"after": "fixed"} for b in dead.bodies()),
            timeout_s=10,
            what="a new delivery, sent at once",
        )
        deliveries = await _statuses(api, destination["id"])
        skipped = []
        for summary in deliveries:
            _, detail = await api.call("GET", f"/v2/event-deliveries/{summary['id']}")
            errors = [a["error"] or "" for a in detail["attempts"]]
            if any(e.startswith("not attempted") for e in errors):
                skipped.append(detail)
        assert skipped, "no delivery was skipped while the circuit was open"
        attempt = next(a for a in skipped[0]["attempts"] if (a["error"] or "").startswith("not"))
        assert (attempt["outcome"], attempt["response_status"], attempt["error"]) == (
            "failed",
            None,
            "not attempted: the destination's circuit is open",
        )
    finally:
        await dead.stop()


async def test_slow_and_paced_destinations_cannot_take_the_global_slots(
    api: Api, receiver: Receiver, stack: Stack
) -> None:
    """The stack has 100 global in-flight slots (conftest.py). Four destinations paced to
    1/s with a backlog of 60 each would, taking the global slot before their rate token,
    hold all 100 while they wait, and the healthy destination's deliveries behind them in
    the same partition would wait for tokens that come at 4 a second. They take a global
    slot only once their token is there: the healthy one is served at once."""
    backlog, paced_count = 60, 4
    *paced_ids, healthy_id = same_partition_ids(paced_count + 1, "evtd_hol")
    paced = [
        await api.create_webhook(
            f"{receiver.url}/paced", ["hol.backlog"], id=paced_id, rate_limit=1
        )
        for paced_id in paced_ids
    ]
    await api.create_webhook(f"{receiver.url}/healthy", ["hol.after"], id=healthy_id)
    try:
        await _publish_many(api, "hol.backlog", backlog)
        await eventually(lambda: receiver.bodies("/paced"), what="the paced destinations")
        published_at = time.monotonic()
        await _publish_many(api, "hol.after", 5)
        await eventually(
            lambda: len(receiver.bodies("/healthy")) == 5,
            timeout_s=30,
            what="the healthy destination behind the backlog",
        )
        assert time.monotonic() - published_at < 10
        assert len(receiver.bodies("/paced")) < paced_count * backlog // 2  # far from done
    finally:
        for destination in paced:
            status, _ = await api.call("DELETE", f"/v2/event-destinations/{destination['id']}")
            assert status in (200, 204)


async def test_a_burst_to_a_healthy_destination_is_never_put_off(
    api: Api, receiver: Receiver, stack: Stack
) -> None:
    """500 deliveries at once to one receiver that answers at once: each is attempted once,
    none put off to a retry tier (a burst is not a destination's ill health)."""
    count = 500
    await api.create_webhook(f"{receiver.url}/burst", ["burst.healthy"])
    worker_before = await scrape(stack.worker_url)
    await _publish_many(api, "burst.healthy", count)
    await eventually(
        lambda: len(receiver.bodies("/burst")) >= count, timeout_s=60, what="the burst"
    )
    worker_after = await scrape(stack.worker_url)
    assert delta(worker_before, worker_after, "herald_deliveries_deferred_total") == 0
    ids = [r.headers["webhook-id"] for r in receiver.requests if r.path == "/burst"]
    assert len(set(ids)) == count
