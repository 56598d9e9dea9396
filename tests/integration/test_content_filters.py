"""Content filters over the real stack: a filtered destination receives only the events its
filter matches, a PATCH of the filter applies to events published after it, and the worker
counts what it filtered out."""

from __future__ import annotations

from typing import Any

from pipeline.ids import new_id
from tests.integration.api_client import Api
from tests.integration.conftest import Stack
from tests.integration.test_metrics import delta, scrape
from tests.support import Receiver, eventually

SHIPPED_OVER_100 = {"data": {"status": "shipped", "total": {"$gte": 100}}}


def _received(receiver: Receiver, path: str) -> set[str]:
    return {body["data"]["n"] for body in receiver.bodies(path)}


async def _publish_all(api: Api, event_type: str, events: dict[str, dict[str, Any]]) -> None:
    for n, data in events.items():
        await api.publish(event_type, {"n": n, **data})


async def _routed(receiver: Receiver, filtered: set[str], everything: set[str]) -> None:
    """Wait until the unfiltered twin has every event and the filtered one its share."""

    def arrived() -> bool:
        return _received(receiver, "/all") >= everything and _received(receiver, "/f") >= filtered

    await eventually(arrived, what="the deliveries of every published event")


async def test_a_filtered_destination_receives_only_matching_events(
    api: Api, receiver: Receiver, stack: Stack
) -> None:
    event_type = f"order.{new_id('t_').lower()}"
    filtered = await api.create_webhook(f"{receiver.url}/f", [event_type], filter=SHIPPED_OVER_100)
    assert filtered["filter"] == SHIPPED_OVER_100
    await api.create_webhook(f"{receiver.url}/all", [event_type])
    worker_before = await scrape(stack.worker_url)
    events = {
        "match": {"status": "shipped", "total": 150},
        "match-float": {"status": "shipped", "total": 100.0},
        "too-small": {"status": "shipped", "total": 99.5},
        "unpaid": {"status": "paid", "total": 500},
        "total-as-text": {"status": "shipped", "total": "150"},
        "no-total": {"status": "shipped"},
    }
    await _publish_all(api, event_type, events)
    await _routed(receiver, {"match", "match-float"}, set(events))
    assert _received(receiver, "/f") == {"match", "match-float"}
    worker_after = await scrape(stack.worker_url)
    counted = {
        outcome: delta(
            worker_before, worker_after, "herald_filter_evaluations_total", outcome=outcome
        )
        for outcome in ("matched", "filtered_out", "error")
    }
    assert counted == {"matched": 2, "filtered_out": 4, "error": 0}


async def test_a_patched_filter_applies_to_events_published_after(
    api: Api, receiver: Receiver
) -> None:
    event_type = f"order.{new_id('t_').lower()}"
    created = await api.create_webhook(
        f"{receiver.url}/f", [event_type], filter={"data": {"status": "shipped"}}
    )
    await api.create_webhook(f"{receiver.url}/all", [event_type])
    path = f"/v2/event-destinations/{created['id']}"
    await _publish_all(
        api, event_type, {"1-shipped": {"status": "shipped"}, "1-paid": {"status": "paid"}}
    )

    status, body = await api.call(
        "PATCH", path, {"filter": {"data": {"status": {"$in": ["paid"]}}}}
    )
    assert status == 200, body
    assert body["filter"] == {"data": {"status": {"$in": ["paid"]}}}
    await _publish_all(
        api, event_type, {"2-shipped": {"status": "shipped"}, "2-paid": {"status": "paid"}}
    )

    status, body = await api.call("PATCH", path, {"filter": None})
    assert (status, body["filter"]) == (200, None)
    await _publish_all(api, event_type, {"3-shipped": {"status": "shipped"}})

    wanted = {"1-shipped", "2-paid", "3-shipped"}
    await _routed(receiver, wanted, wanted | {"1-paid", "2-shipped"})
    assert _received(receiver, "/f") == wanted
    status, body = await api.call("GET", path)
    assert (status, body["filter"]) == (200, None)


async def test_a_bad_filter_is_a_400_naming_its_path(api: Api, receiver: Receiver) -> None:
    status, body = await api.call(
        "POST",
        "/v2/event-destinations",
        {
            "name": "hook",
            "webhook": {"url": f"{receiver.url}/f"},
            "events": ["*"],
            "filter": {"data": {"total": {"$gte": [100]}, "status": {"$like": "s%"}}},
        },
    )
    assert status == 400, body
    assert set(body["errors"]) == {"filter.data.total.$gte", "filter.data.status.$like"}
    created = await api.create_webhook(f"{receiver.url}/f", ["a.b"])
    status, body = await api.call(
        "PATCH", f"/v2/event-destinations/{created['id']}", {"filter": {"status": "x"}}
    )
    assert (status, list(body["errors"])) == (400, ["filter.status"])
