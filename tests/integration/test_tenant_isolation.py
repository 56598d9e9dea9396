"""Tenant isolation over every /v2 route: another tenant's key finds nothing and changes nothing.

The route table is read from the application's router, so a route added without an entry in
CASES fails `test_every_route_has_a_case` until someone decides how it is isolated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.app import create_app
from pipeline.crypto import generate_key
from pipeline.settings import Settings
from tests.integration.api_client import Api
from tests.integration.sinks.test_pinned_addresses import (
    CHECKED,
    REFUSED,
    FakeBroker,
    free_port_on,
    trap_on,
)
from tests.support import Receiver, eventually


@dataclass(frozen=True)
class Case:
    """How a route is called across tenants and what the caller must see."""

    path: str  # with {destination}, {event}, {delivery} for the owner's objects
    kind: str  # "object": 404; "list": none of the owner's objects; "own": acts on caller's
    body: Any = None


D = "/v2/event-destinations/{destination}"
CASES: dict[tuple[str, str], Case] = {
    ("GET", "/v2/event-destinations"): Case("/v2/event-destinations?limit=100", "list"),
    # Creating and publishing act only in the caller's tenant; nothing of another's is named.
    ("POST", "/v2/event-destinations"): Case("", "own"),
    ("POST", "/v2/events"): Case("", "own"),
    ("POST", "/v2/events/batch"): Case("", "own"),
    ("GET", "/v2/events"): Case("/v2/events?limit=100", "list"),
    ("GET", "/v2/event-destinations/{destination_id}"): Case(D, "object"),
    ("PATCH", "/v2/event-destinations/{destination_id}"): Case(
        D, "object", {"name": "stolen", "webhook": {"url": "https://attacker.example/"}}
    ),
    ("DELETE", "/v2/event-destinations/{destination_id}"): Case(D, "object"),
    ("POST", "/v2/event-destinations/{destination_id}/enable"): Case(D + "/enable", "object"),
    ("POST", "/v2/event-destinations/{destination_id}/disable"): Case(D + "/disable", "object"),
    ("POST", "/v2/event-destinations/{destination_id}/test"): Case(D + "/test", "object"),
    ("POST", "/v2/event-destinations/{destination_id}/rotate-secret"): Case(
        D + "/rotate-secret", "object"
    ),
    ("GET", "/v2/event-destinations/{destination_id}/event-deliveries"): Case(
        D + "/event-deliveries", "object"
    ),
    ("GET", "/v2/events/{event_id}"): Case("/v2/events/{event}", "object"),
    ("POST", "/v2/events/{event_id}/replay"): Case("/v2/events/{event}/replay", "object"),
    ("GET", "/v2/event-deliveries/{delivery_id}"): Case(
        "/v2/event-deliveries/{delivery}", "object"
    ),
    ("POST", "/v2/event-deliveries/{delivery_id}/retry"): Case(
        "/v2/event-deliveries/{delivery}/retry", "object"
    ),
}


def _v2_routes() -> set[tuple[str, str]]:
    app = create_app(Settings(encryption_keys=generate_key()))  # not started: no I/O
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        # HEAD runs the GET handler, which its GET case covers.
        if route.resource is not None
        and route.resource.canonical.startswith("/v2/")
        and route.method != "HEAD"
    }


def test_every_route_has_a_case() -> None:
    assert _v2_routes() == set(CASES)


async def _snapshot(api: Api, ids: dict[str, str]) -> dict[str, Any]:
    """Everything the owner can see of its objects, minus per-response request ids."""

    async def get(path: str) -> Any:
        status, body = await api.call("GET", path)
        assert status == 200, (path, body)
        body.pop("request_id", None)
        return body

    return {
        "destination": await get(f"/v2/event-destinations/{ids['destination']}"),
        "event": await get(f"/v2/events/{ids['event']}"),
        "delivery": await get(f"/v2/event-deliveries/{ids['delivery']}"),
    }


async def test_another_tenant_finds_nothing_and_changes_nothing(
    api: Api, other_tenant: Api, receiver: Receiver
) -> None:
    destination = await api.create_webhook(f"{receiver.url}/iso", ["iso_check.*"])
    event_id = await api.publish("iso_check.created", {"n": 1})
    await eventually(lambda: receiver.requests, what="the owner's first delivery")

    async def delivered() -> list[dict[str, Any]]:
        _, body = await api.call("GET", f"/v2/event-destinations/{destination['id']}")
        if body["status"] != "active":
            return []
        _, log = await api.call(
            "GET", f"/v2/event-destinations/{destination['id']}/event-deliveries"
        )
        return [d for d in log["data"] if d["status"] == "succeeded"]

    [delivery] = await eventually(delivered, what="the delivery indexed and the hook active")
    ids = {"destination": destination["id"], "event": event_id, "delivery": delivery["id"]}
    before = await _snapshot(api, ids)
    owned = set(ids.values())

    for (method, template), case in CASES.items():
        if case.kind == "own":
            continue
        status, body = await other_tenant.call(method, case.path.format(**ids), case.body)
        if case.kind == "list":
            assert status == 200, (method, template, body)
            assert not owned & {item["id"] for item in body["data"]}, (method, template)
        else:
            assert status == 404, (method, template, status, body)
            assert body["errors"][0]["code"] == "resource_missing", (method, template)

    # A body that names the owner's destination is treated as naming nothing at all.
    own_event = await other_tenant.publish("iso_check.created", {"n": 2})
    replay = f"/v2/events/{own_event}/replay"

    async def replay_to(target: str) -> Any:
        status, body = await other_tenant.call("POST", replay, {"destination_id": target})
        return (status, body["errors"][0]["code"]) if status == 422 else None

    assert await eventually(lambda: replay_to(destination["id"]), what="the event indexed") == (
        422,
        "destination_unusable",
    )
    assert await replay_to("evtd_does_not_exist") == (422, "destination_unusable")

    # Nothing reached the owner's receiver but its own events: a sentinel published after
    # every cross-tenant call arrives, and nothing else arrived with it.
    sentinel = await api.publish("iso_check.sentinel", {})
    await eventually(
        lambda: any(b["id"] == sentinel for b in receiver.bodies()), what="the sentinel"
    )
    assert [b["id"] for b in receiver.bodies()] == [event_id, sentinel]
    after = await _snapshot(api, ids)
    assert after["destination"] == before["destination"]
    assert after["event"] == before["event"]
    assert after["delivery"] == before["delivery"]


async def test_a_tenants_cluster_cannot_steer_delivery_to_an_internal_address(api: Api) -> None:
    """A5 through the whole stack: a tenant's Kafka cluster advertises a broker at an
    address the policy refuses (say, another tenant's or Herald's own internal service).
    The worker fails the delivery permanently and never connects there."""
    refused_port = free_port_on(REFUSED)
    async with trap_on(refused_port) as trap, FakeBroker(refused_port).running() as broker:
        status, destination = await api.call(
            "POST",
            "/v2/event-destinations",
            {
                "name": "steered",
                "type": "kafka",
                "kafka": {"bootstrap_servers": f"{CHECKED}:{broker.port}", "topic": "t"},
                "events": ["iso_steer.*"],
            },
        )
        assert status == 201, destination
        try:
            await api.publish("iso_steer.created", {"n": 1})

            async def failed() -> list[dict[str, Any]]:
                path = f"/v2/event-destinations/{destination['id']}/event-deliveries"
                _, log = await api.call("GET", f"{path}?status=failed")
                return list(log["data"])

            [delivery] = await eventually(failed, timeout_s=60, what="the failed delivery")
            _, detail = await api.call("GET", f"/v2/event-deliveries/{delivery['id']}")
            assert "outbound policy" in detail["attempts"][-1]["error"]
        finally:
            await api.call("DELETE", f"/v2/event-destinations/{destination['id']}")
    assert trap.connections == 0
