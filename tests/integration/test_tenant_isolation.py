"""Tenant isolation over every /v2 route: another tenant's key finds nothing and changes nothing.

The route table is read from the application's router, so a route added without an entry in
CASES fails `test_every_route_has_a_case` until someone decides how it is isolated.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from api.app import create_app
from api.auth import MANAGE, PORTAL, PUBLISH, allowed_roles
from pipeline.crypto import generate_key
from pipeline.settings import Settings
from tests.integration.api_client import Api
from tests.integration.conftest import PLATFORM_KEY, Stack
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
    # "object": 404; "list": none of the owner's objects; "own": acts on caller's;
    # "stats": the caller's statistics by destination, none of them the owner's;
    # "platform": the tenants API, a 403 for any tenant's key whatever the id names.
    kind: str
    body: Any = None


D = "/v2/event-destinations/{destination}"
T = "/v2/tenants/dev"  # the owner's tenant (configured, without a record)
# A valid recovery window (an hour back from now): a refusal then comes from isolation alone.
RECOVER_SINCE = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
STATS = "/v2/stats?group_by=destination&bucket=day"
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
    ("POST", "/v2/event-destinations/{destination_id}/recover"): Case(
        D + "/recover", "object", {"since": RECOVER_SINCE}
    ),
    ("GET", "/v2/event-destinations/{destination_id}/recoveries/{recovery_id}"): Case(
        D + "/recoveries/rcv_01JAAAAAAAAAAAAAAAAAAAAAAA", "object"
    ),
    ("GET", "/v2/event-destinations/{destination_id}/stats"): Case(D + "/stats", "object"),
    # Issue 18: the tenant's statistics, by destination: none of the owner's destinations.
    ("GET", "/v2/stats"): Case(STATS, "stats"),
    ("GET", "/v2/events/{event_id}"): Case("/v2/events/{event}", "object"),
    ("POST", "/v2/events/{event_id}/replay"): Case("/v2/events/{event}/replay", "object"),
    ("GET", "/v2/event-deliveries/{delivery_id}"): Case(
        "/v2/event-deliveries/{delivery}", "object"
    ),
    ("POST", "/v2/event-deliveries/{delivery_id}/retry"): Case(
        "/v2/event-deliveries/{delivery}/retry", "object"
    ),
    ("POST", "/v2/tenants"): Case("/v2/tenants", "platform", {"name": "stolen"}),
    ("GET", "/v2/tenants"): Case("/v2/tenants", "platform"),
    ("GET", "/v2/tenants/{tenant_id}"): Case(T, "platform"),
    ("PATCH", "/v2/tenants/{tenant_id}"): Case(T, "platform", {"name": "stolen"}),
    ("DELETE", "/v2/tenants/{tenant_id}"): Case(T, "platform"),
    ("POST", "/v2/tenants/{tenant_id}/api-keys"): Case(
        T + "/api-keys", "platform", {"role": "manage"}
    ),
    ("GET", "/v2/tenants/{tenant_id}/api-keys"): Case(T + "/api-keys", "platform"),
    ("DELETE", "/v2/tenants/{tenant_id}/api-keys/{key_id}"): Case(
        T + "/api-keys/key_x", "platform"
    ),
    ("POST", "/v2/tenants/{tenant_id}/portal-sessions"): Case(
        T + "/portal-sessions", "platform", {}
    ),
}


def _v2_routes() -> dict[tuple[str, str], frozenset[str]]:
    """Every /v2 route, with the roles that may call it."""
    app = create_app(Settings(encryption_keys=generate_key()))  # not started: no I/O
    return {
        (route.method, route.resource.canonical): allowed_roles(route.handler)
        for route in app.router.routes()
        # HEAD runs the GET handler, which its GET case covers.
        if route.resource is not None
        and route.resource.canonical.startswith("/v2/")
        and route.method != "HEAD"
    }


ROLES = _v2_routes()


def test_every_route_has_a_case() -> None:
    assert set(ROLES) == set(CASES)


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


async def _finds_nothing(caller: Api, role: str, ids: dict[str, str]) -> None:
    """Every route called by `caller` (of another tenant, with `role`) on the owner's objects:
    a 404 for each object, none of them in a list, a 403 where the role may not go."""
    for (method, template), case in CASES.items():
        if case.kind == "own":
            continue
        status, body = await caller.call(method, case.path.format(**ids), case.body)
        if case.kind == "platform" or role not in ROLES[(method, template)]:
            assert status == 403, (method, template, status, body)
        elif case.kind == "stats":
            assert status == 200, (method, template, body)
            assert ids["destination"] not in {group["key"] for group in body["groups"]}
        elif case.kind == "list":
            assert status == 200, (method, template, body)
            assert not set(ids.values()) & {item["id"] for item in body["data"]}, template
        else:
            assert status == 404, (method, template, status, body)
            assert body["errors"][0]["code"] == "resource_missing", (method, template)


@contextlib.asynccontextmanager
async def _client(
    stack: Stack, key: str, headers: dict[str, str] | None = None
) -> AsyncIterator[Api]:
    sent = {"Authorization": f"Bearer {key}", **(headers or {})}
    async with aiohttp.ClientSession(base_url=stack.api_url, headers=sent) as session:
        yield Api(session)


async def test_another_tenant_finds_nothing_and_changes_nothing(
    api: Api,
    other_tenant: Api,
    platform: Api,
    publisher: Api,
    stack: Stack,
    receiver: Receiver,
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
    # The owner sees its delivery in the statistics the other tenants are refused.
    status, own = await api.call("GET", f"/v2/event-destinations/{destination['id']}/stats")
    assert (status, own["totals"]["deliveries"]["created"]) == (200, 1), own

    await _finds_nothing(other_tenant, MANAGE, ids)
    # Issue 15: the platform acting for another tenant, and another tenant's portal session,
    # are that tenant: they find nothing of the owner's either.
    async with _client(stack, PLATFORM_KEY, {"Herald-Tenant": "other"}) as acting:
        await _finds_nothing(acting, MANAGE, ids)
    status, tenant = await platform.call("POST", "/v2/tenants", {"name": "isolation"})
    assert status == 201, tenant
    status, session = await platform.call("POST", f"/v2/tenants/{tenant['id']}/portal-sessions")
    assert status == 201, session
    async with _client(stack, session["token"]) as portal:
        await _finds_nothing(portal, PORTAL, ids)
    # A platform key without the header sees no tenant's data; a publish key of the owner's
    # own tenant may only publish.
    for (method, template), case in CASES.items():
        path = (case.path or template).format(**ids)
        if case.kind != "platform":
            status, body = await platform.call(method, path, case.body)
            assert (status, body["errors"][0]["field"]) == (403, "Herald-Tenant"), template
        if PUBLISH not in ROLES[(method, template)]:
            status, body = await publisher.call(method, path, case.body)
            assert status == 403, (method, template, status, body)

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


async def test_a_stored_idempotent_response_goes_back_only_to_the_key_that_caused_it(
    api: Api, publisher: Api
) -> None:
    """A publish-only key that repeats a manage call's Idempotency-Key and body gets the 403
    its role earns, never the stored 201 with the generated signing secret; and a key of the
    same tenant sending another key's Idempotency-Key runs its own request."""
    key = f"scoped-{uuid.uuid4().hex}"
    body = {"name": "scoped", "webhook": {"url": "https://example.com/s"}, "events": ["sc.op"]}
    headers = {"Idempotency-Key": key}
    status, created = await api.call("POST", "/v2/event-destinations", body, headers=headers)
    assert status == 201, created
    try:
        secret = created["webhook"]["secret"]
        status, answer = await publisher.call(
            "POST", "/v2/event-destinations", body, headers=headers
        )
        assert status == 403, answer
        assert secret not in json.dumps(answer)
        assert answer["errors"][0]["code"] == "forbidden"
    finally:
        await api.call("DELETE", f"/v2/event-destinations/{created['id']}")

    event = {"type": "sc.op", "data": {}}
    headers = {"Idempotency-Key": f"{key}-publish"}
    status, first = await api.call("POST", "/v2/events", event, headers=headers)
    assert status == 202, first
    status, own = await publisher.call("POST", "/v2/events", event, headers=headers)
    assert status == 202, own
    assert own["id"] != first["id"], "another API key's stored response was replayed"


# -- Issue 12, section A: ids are per tenant, and a deleted id passes nothing on. ----------


def _unique(prefix: str) -> str:
    return f"{prefix}{time.time_ns()}"


FINAL = {"canceled", "failed", "succeeded"}


async def _delivery_status(api: Api, delivery_id: str) -> str | None:
    status, body = await api.call("GET", f"/v2/event-deliveries/{delivery_id}")
    return str(body["status"]) if status == 200 else None


async def test_a1_a_deleted_destination_id_passes_nothing_to_its_next_owner(
    api: Api, other_tenant: Api
) -> None:
    """Tenant A's `evtd_x` fails, A deletes it while its deliveries wait in the retry
    tiers, tenant B creates its own `evtd_x`: B's receiver gets none of A's events, and A's
    deliveries end `canceled` instead of staying pending."""
    failing = await Receiver(status=500, delay_s=0.5).start()
    theirs = await Receiver().start()
    try:
        shared_id = _unique("evtd_reused_")
        await api.create_webhook(f"{failing.url}/a", ["iso_reuse.*"], id=shared_id)
        mine = {await api.publish("iso_reuse.created", {"secret": n}) for n in range(3)}
        await eventually(lambda: len(failing.requests) >= 3, what="A's first attempts")
        status, _ = await api.call("DELETE", f"/v2/event-destinations/{shared_id}")
        assert status == 200
        await other_tenant.create_webhook(f"{theirs.url}/b", ["iso_reuse.*"], id=shared_id)
        sentinel = await other_tenant.publish("iso_reuse.created", {"n": "b"})
        await eventually(
            lambda: any(b["id"] == sentinel for b in theirs.bodies()), what="B's own event"
        )
        delivery_ids = {r.headers["webhook-id"] for r in failing.requests}

        async def final() -> list[str | None] | None:
            states = [await _delivery_status(api, d) for d in delivery_ids]
            return states if all(s in FINAL for s in states) else None

        # Every chain of A's is over once its deliveries are final: nothing is left to leak.
        states = await eventually(final, timeout_s=30, what="A's deliveries final")
        assert not mine & {b["id"] for b in theirs.bodies()}, "A's events reached B"
        assert [b["id"] for b in theirs.bodies()] == [sentinel]
        assert states == ["canceled"] * len(states)
    finally:
        await failing.stop()
        await theirs.stop()


async def test_a3_the_same_publisher_event_id_in_two_tenants_is_two_events(
    api: Api, other_tenant: Api
) -> None:
    """Both tenants publish `evt_same` to a destination of the same client-chosen id: each
    receives its own, and the index holds two events and two deliveries."""
    mine, theirs = await Receiver().start(), await Receiver().start()
    try:
        destination_id, event_id = _unique("evtd_twin_"), _unique("evt_same_")
        for tenant, receiver in ((api, mine), (other_tenant, theirs)):
            await tenant.create_webhook(f"{receiver.url}/h", ["iso_twin.*"], id=destination_id)
        for tenant, who in ((api, "dev"), (other_tenant, "other")):
            status, body = await tenant.call(
                "POST",
                "/v2/events",
                {"id": event_id, "type": "iso_twin.made", "data": {"who": who}},
            )
            assert status == 202, body
        for receiver, who in ((mine, "dev"), (theirs, "other")):
            [body] = await eventually(receiver.bodies, what=f"{who}'s event delivered")
            assert (body["id"], body["data"]) == (event_id, {"who": who})

        async def indexed(tenant: Api) -> Any:
            path = f"/v2/event-destinations/{destination_id}/event-deliveries"
            _, log = await tenant.call("GET", path)
            done = [d for d in log.get("data", []) if d["status"] == "succeeded"]
            return done or None

        [delivery_a] = await eventually(lambda: indexed(api), what="A's delivery indexed")
        [delivery_b] = await eventually(lambda: indexed(other_tenant), what="B's indexed")
        assert delivery_a["id"] != delivery_b["id"]
        assert {delivery_a["event_id"], delivery_b["event_id"]} == {event_id}
        for tenant, who in ((api, "dev"), (other_tenant, "other")):
            status, event = await tenant.call("GET", f"/v2/events/{event_id}")
            assert (status, event["data"]) == (200, {"who": who})
    finally:
        await mine.stop()
        await theirs.stop()


async def test_a4_an_id_taken_by_another_tenant_is_no_conflict(
    api: Api, other_tenant: Api, receiver: Receiver
) -> None:
    """A client-chosen id is a 409 only within its tenant: another tenant's create of the
    same id succeeds (revealing nothing) and leaves the first owner's destination alone."""
    destination_id = _unique("evtd_taken_")
    owner = await api.create_webhook(f"{receiver.url}/owner", ["iso_taken.*"], id=destination_id)

    async def other_creates(name: str, path: str) -> tuple[int, Any]:
        """The other tenant's create of a webhook destination with the owner's id."""
        return await other_tenant.call(
            "POST",
            "/v2/event-destinations",
            {
                "id": destination_id,
                "name": name,
                "webhook": {"url": f"{receiver.url}{path}"},
                "events": ["iso_taken.*"],
            },
        )

    status, body = await other_creates("mine", "/other")
    assert status == 201, body
    assert body["id"] == destination_id and body["webhook"]["url"].endswith("/other")
    status, again = await other_creates("dup", "/x")
    assert (status, again["errors"][0]["code"]) == (409, "resource_already_exists")
    status, still = await api.call("GET", f"/v2/event-destinations/{destination_id}")
    assert status == 200 and still["webhook"]["url"] == owner["webhook"]["url"]
    # Each tenant's events go to its own destination of that id only.
    mine = await api.publish("iso_taken.done", {})
    theirs = await other_tenant.publish("iso_taken.done", {})
    await eventually(lambda: len(receiver.requests) >= 2, what="both deliveries")
    assert {(r.path, orjson.loads(r.body)["id"]) for r in receiver.requests} == {
        ("/owner", mine),
        ("/other", theirs),
    }


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
