"""Ordered delivery per key over the real stack: a per_key destination never gets a key's
event before the previous one succeeded, though the receiver fails first attempts; an
unordered twin gets the same events in parallel (and out of order); a key held at the
receiver holds nothing else; the API shows `ordering` and `ordering_key`.

(The fault suite runs the issue's full size, 10,000 events over 100 keys, with the worker
killed mid-run: tests/faults/test_ordering_crash.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from pipeline.ids import new_id
from tests.integration.api_client import Api
from tests.support import KeyOrderReceiver, eventually, one_in

EVENTS = 1000
KEYS = 20


@pytest.fixture
async def ordered_receiver() -> AsyncIterator[KeyOrderReceiver]:
    receiver = await KeyOrderReceiver(fail_first=one_in(5)).start()
    yield receiver
    receiver.release.set()
    await receiver.stop()


def keyed_events(event_type: str, count: int, keys: list[str]) -> list[dict[str, Any]]:
    """`count` events spread over `keys` in turn, each carrying its key and its seq."""
    return [
        {
            "type": event_type,
            "data": {"key": keys[n % len(keys)], "seq": n // len(keys)},
            "ordering_key": keys[n % len(keys)],
        }
        for n in range(count)
    ]


async def publish_batch(api: Api, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    status, body = await api.call("POST", "/v2/events/batch", {"events": events})
    assert status == 202 and body["accepted"] == len(events), body
    return list(body["data"])


# 1,000 events take about 12 s on an idle machine; more on a shared one, and the session's
# services start inside the first test's time when this file runs alone.
@pytest.mark.timeout(300)
async def test_a_keys_events_arrive_in_order_though_first_attempts_fail(
    api: Api, ordered_receiver: KeyOrderReceiver
) -> None:
    receiver = ordered_receiver
    event_type = f"order.{new_id('t_').lower()}"
    ordered = await api.create_webhook(f"{receiver.url}/ordered", [event_type], ordering="per_key")
    assert ordered["ordering"] == "per_key"
    twin = await api.create_webhook(f"{receiver.url}/parallel", [event_type])
    assert twin["ordering"] == "none"
    keys = [f"order-{n}" for n in range(KEYS)]
    accepted = await publish_batch(api, keyed_events(event_type, EVENTS, keys))
    assert accepted[0]["ordering_key"] == keys[0]

    def arrived() -> bool:
        return receiver.count("/ordered") == EVENTS and receiver.count("/parallel") == EVENTS

    await eventually(arrived, timeout_s=90, interval_s=0.2, what="every event at both")
    assert [o for o in receiver.out_of_order if o[0] == "/ordered"] == []
    # The check can fail: the unordered twin's retries come back after later events.
    assert [o for o in receiver.out_of_order if o[0] == "/parallel"] != []

    status, shown = await api.call("GET", f"/v2/events/{accepted[1]['id']}")
    assert status == 200 and shown["ordering_key"] == keys[1]
    status, shown = await api.call(
        "PATCH", f"/v2/event-destinations/{twin['id']}", {"ordering": "per_key"}
    )
    assert status == 200 and shown["ordering"] == "per_key"
    status, shown = await api.call("GET", f"/v2/event-destinations/{twin['id']}")
    assert shown["ordering"] == "per_key"


async def test_a_held_key_holds_neither_other_keys_nor_other_destinations(
    api: Api, ordered_receiver: KeyOrderReceiver
) -> None:
    receiver = ordered_receiver
    receiver.fail_first = lambda key, seq: False
    receiver.hold.add("stuck")  # its requests get no answer until released
    event_type = f"order.{new_id('t_').lower()}"
    await api.create_webhook(f"{receiver.url}/ordered", [event_type], ordering="per_key")
    await api.create_webhook(f"{receiver.url}/other", [event_type], ordering="per_key")
    stuck = keyed_events(event_type, 2, ["stuck"])
    others = keyed_events(event_type, 200, [f"free-{n}" for n in range(10)])
    await publish_batch(api, stuck + others)

    def others_arrived() -> bool:
        free = {path: 0 for path in ("/ordered", "/other")}
        for (path, key), seqs in receiver.delivered.items():
            if key.startswith("free-"):
                free[path] += len(seqs)
        return all(count == len(others) for count in free.values())

    # Everything after the stuck key's head, on both destinations, goes past it...
    await eventually(others_arrived, timeout_s=60, interval_s=0.1, what="the other keys")
    # ...while its own next event waits behind it.
    assert ("/ordered", "stuck", 1) not in receiver.seen
    receiver.release.set()
    await eventually(
        lambda: all(receiver.delivered.get((p, "stuck")) == {0, 1} for p in ("/ordered", "/other")),
        timeout_s=60,
        what="the stuck key once released",
    )
    assert receiver.out_of_order == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "a.b", "data": {}, "ordering_key": "k" * 257}, "ordering_key"),
        ({"type": "a.b", "data": {}, "ordering_key": ""}, "ordering_key"),
        ({"type": "a.b", "data": {}, "ordering_key": {"k": 1}}, "ordering_key"),
    ],
)
async def test_a_bad_ordering_key_is_refused_naming_it(
    api: Api, body: dict[str, Any], field: str
) -> None:
    status, answer = await api.call("POST", "/v2/events", body)
    assert status == 400 and list(answer["errors"]) == [field]
    status, answer = await api.call("POST", "/v2/events/batch", {"events": [body]})
    assert status == 400 and list(answer["errors"]) == [f"events[0].{field}"]


async def test_a_bad_ordering_is_refused_naming_it(api: Api) -> None:
    status, answer = await api.call(
        "POST",
        "/v2/event-destinations",
        {"name": "n", "webhook": {"url": "http://127.0.0.1:9/h"}, "events": ["*"], "ordering": 1},
    )
    assert status == 400 and list(answer["errors"]) == ["ordering"]
