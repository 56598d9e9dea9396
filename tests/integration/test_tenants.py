"""Tenants as data: the tenants API, minted keys, Herald-Tenant, and deleting a tenant."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from tests.integration.api_client import Api
from tests.integration.conftest import API_PORT, PLATFORM_KEY, Services, Stack, extra_api
from tests.support import Receiver, eventually

SECOND_API_PORT = API_PORT + 9
REVOCATIONS = 5  # measured one after another: the figure is their spread, not one sample


@contextlib.asynccontextmanager
async def client(url: str, key: str, tenant: str | None = None) -> AsyncIterator[Api]:
    """An Api for `key` at `url`, acting for `tenant` (Herald-Tenant) if given; deletes the
    destinations it created when done."""
    headers = {"Authorization": f"Bearer {key}"}
    if tenant is not None:
        headers["Herald-Tenant"] = tenant
    async with aiohttp.ClientSession(base_url=url, headers=headers) as session:
        api = Api(session)
        try:
            yield api
        finally:
            await api.delete_created()


def unique(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def new_tenant(platform: Api, **extra: Any) -> dict[str, Any]:
    status, body = await platform.call(
        "POST", "/v2/tenants", {"id": unique(), "name": "Acme", **extra}
    )
    assert status == 201, body
    return dict(body)


async def mint(platform: Api, tenant_id: str, role: str = "manage") -> dict[str, Any]:
    status, body = await platform.call(
        "POST", f"/v2/tenants/{tenant_id}/api-keys", {"role": role, "name": "ci"}
    )
    assert status == 201, body
    return dict(body)


async def test_create_read_list_patch_a_tenant(platform: Api) -> None:
    status, generated = await platform.call("POST", "/v2/tenants", {"name": "Generated"})
    assert status == 201, generated
    assert generated["id"].startswith("ten_") and generated["object"] == "tenant"
    chosen = await new_tenant(platform, metadata={"plan": "pro"})
    assert chosen["metadata"] == {"plan": "pro"}

    status, again = await platform.call("POST", "/v2/tenants", {"id": chosen["id"], "name": "x"})
    assert (status, again["errors"][0]["field"]) == (409, "id")

    status, read = await platform.call("GET", f"/v2/tenants/{chosen['id']}")
    assert status == 200 and read["name"] == "Acme"
    status, patched = await platform.call(
        "PATCH", f"/v2/tenants/{chosen['id']}", {"name": "Acme Inc"}
    )
    assert status == 200, patched
    assert (patched["name"], patched["metadata"]) == ("Acme Inc", {"plan": "pro"})

    ids: list[str] = []
    cursor = None
    while True:
        path = "/v2/tenants?limit=1" + (f"&cursor={cursor}" if cursor else "")
        status, page = await platform.call("GET", path)
        assert status == 200 and len(page["data"]) <= 1
        ids += [t["id"] for t in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert {generated["id"], chosen["id"]} <= set(ids)
    assert len(ids) == len(set(ids))


async def test_bad_tenant_bodies_name_the_field(platform: Api) -> None:
    cases = [
        ({"id": "has space", "name": "x"}, "id"),
        ({"id": "x" * 65, "name": "x"}, "id"),
        ({}, "name"),
        ({"name": "x", "metadata": {"k": 1}}, "metadata"),
        ({"name": "x", "colour": "red"}, "colour"),
        ({"name": "x" * 201}, "name"),
    ]
    for body, field in cases:
        status, answer = await platform.call("POST", "/v2/tenants", body)
        assert status == 400, (body, answer)
        assert field in answer["errors"], (body, answer)
    tenant = await new_tenant(platform)
    status, answer = await platform.call(
        "POST", f"/v2/tenants/{tenant['id']}/api-keys", {"role": "owner"}
    )
    assert (status, list(answer["errors"])) == (400, ["role"])


async def test_a_minted_key_works_and_lists_without_its_secret(
    platform: Api, stack: Stack, receiver: Receiver
) -> None:
    tenant = await new_tenant(platform)
    minted = await mint(platform, tenant["id"])
    key = minted["key"]
    assert key.startswith("hk_live_") and len(key) >= len("hk_live_") + 43
    assert minted["prefix"] == key[:12] and minted["role"] == "manage"
    async with client(stack.api_url, key) as api:
        await api.create_webhook(f"{receiver.url}/minted", ["minted.*"])
        event_id = await api.publish("minted.made", {"n": 1})
        await eventually(lambda: receiver.bodies(), what="the delivery")
        assert [b["id"] for b in receiver.bodies()] == [event_id]
    status, listed = await platform.call("GET", f"/v2/tenants/{tenant['id']}/api-keys")
    assert status == 200
    [shown] = listed["data"]
    assert shown["id"] == minted["id"] and "key" not in shown and "key_sha256" not in shown
    assert key not in str(listed) and shown["revoked_at"] is None
    assert key not in (stack.logs / "api.log").read_text()


async def test_a_publish_key_may_only_publish(platform: Api, stack: Stack) -> None:
    tenant = await new_tenant(platform)
    minted = await mint(platform, tenant["id"], role="publish")
    async with client(stack.api_url, minted["key"]) as api:
        assert (await api.call("POST", "/v2/events", {"type": "p.made", "data": {}}))[0] == 202
        status, body = await api.call("GET", "/v2/event-destinations")
        assert (status, body["errors"][0]["code"]) == (403, "forbidden")


async def test_the_platform_acts_for_a_tenant_with_herald_tenant(
    platform: Api, stack: Stack, receiver: Receiver
) -> None:
    tenant = await new_tenant(platform)
    async with client(stack.api_url, PLATFORM_KEY, tenant["id"]) as acting:
        destination = await acting.create_webhook(f"{receiver.url}/acting", ["acting.*"])
        event_id = await acting.publish("acting.made", {"for": tenant["id"]})
        await eventually(lambda: receiver.bodies(), what="the delivery")
        assert [b["id"] for b in receiver.bodies()] == [event_id]
        # It is the tenant's own destination: the tenant's key sees it.
        minted = await mint(platform, tenant["id"])
        async with client(stack.api_url, minted["key"]) as own:
            status, seen = await own.call("GET", f"/v2/event-destinations/{destination['id']}")
            assert status == 200, seen
        # Herald-Tenant makes it a manage caller: no tenants API that way.
        status, body = await acting.call("GET", "/v2/tenants")
        assert status == 403, body

    # Without the header a platform key sees no tenant data, and is told why.
    status, body = await platform.call("GET", "/v2/event-destinations")
    assert status == 403
    assert body["errors"][0]["field"] == "Herald-Tenant"
    assert "Herald-Tenant" in body["errors"][0]["message"]
    status, body = await platform.call("POST", "/v2/events", {"type": "a.b", "data": {}})
    assert status == 403

    # Env-configured tenants work without a record; an unknown one is a 404 naming the header.
    async with client(stack.api_url, PLATFORM_KEY, "other") as acting:
        assert (await acting.call("GET", "/v2/event-destinations"))[0] == 200
    async with client(stack.api_url, PLATFORM_KEY, unique("nobody")) as acting:
        status, body = await acting.call("GET", "/v2/event-destinations")
        assert (status, body["errors"][0]["field"]) == (404, "Herald-Tenant")


async def test_a_tenant_key_may_name_only_its_own_tenant(platform: Api, stack: Stack) -> None:
    mine, theirs = await new_tenant(platform), await new_tenant(platform)
    minted = await mint(platform, mine["id"])
    async with client(stack.api_url, minted["key"], mine["id"]) as api:
        assert (await api.call("GET", "/v2/event-destinations"))[0] == 200
    for named in (theirs["id"], unique("nobody")):
        async with client(stack.api_url, minted["key"], named) as api:
            status, body = await api.call("GET", "/v2/event-destinations")
            assert (status, body["errors"][0]["field"]) == (403, "Herald-Tenant")
    # A tenant key cannot reach the tenants API at all.
    async with client(stack.api_url, minted["key"]) as api:
        for method, path in (
            ("GET", "/v2/tenants"),
            ("POST", f"/v2/tenants/{mine['id']}/api-keys"),
            ("POST", f"/v2/tenants/{mine['id']}/portal-sessions"),
        ):
            status, _ = await api.call(method, path, {"role": "manage"})
            assert status == 403, (method, path)


async def test_deleting_a_tenant_refuses_its_keys_and_disables_its_destinations(
    platform: Api, stack: Stack, receiver: Receiver
) -> None:
    tenant = await new_tenant(platform)
    minted = await mint(platform, tenant["id"])
    async with client(stack.api_url, minted["key"]) as api:
        destination = await api.create_webhook(f"{receiver.url}/gone", ["gone.*"])
        status, deleted = await platform.call("DELETE", f"/v2/tenants/{tenant['id']}")
        assert status == 200, deleted
        assert deleted["disabled_destination_ids"] == [destination["id"]]
        status, body = await api.call("GET", "/v2/event-destinations")
        assert status == 401, body
        api.created.clear()  # its key is refused now; the platform checks it instead
    async with client(stack.api_url, PLATFORM_KEY, tenant["id"]) as acting:
        status, body = await acting.call("GET", "/v2/event-destinations")
        assert (status, body["errors"][0]["field"]) == (404, "Herald-Tenant")
    assert (await platform.call("GET", f"/v2/tenants/{tenant['id']}"))[0] == 404
    status, listed = await platform.call("GET", "/v2/tenants?limit=100")
    assert tenant["id"] not in {t["id"] for t in listed["data"]}
    # Its id is never handed out again, and a repeated DELETE finishes what is left.
    status, _ = await platform.call("POST", "/v2/tenants", {"id": tenant["id"], "name": "x"})
    assert status == 409
    status, again = await platform.call("DELETE", f"/v2/tenants/{tenant['id']}")
    assert (status, again["disabled_destination_ids"]) == (200, [])


async def test_a_second_api_process_sees_every_change_and_a_revocation_within_a_second(
    platform: Api, services: Services
) -> None:
    """A second API process reads what the first wrote at once, concurrent PATCHes of one
    tenant through both processes are both kept, and a key revoked through the first is
    refused by the second well within a second of the DELETE's response."""
    tenant = await new_tenant(platform, metadata={"plan": "free"})
    keys = [await mint(platform, tenant["id"]) for _ in range(REVOCATIONS)]
    refused_after_ms: list[float] = []
    with extra_api(services, "api-second", SECOND_API_PORT) as second_url:
        async with client(second_url, PLATFORM_KEY) as other_process:
            status, read = await other_process.call("GET", f"/v2/tenants/{tenant['id']}")
            assert status == 200, read
            path = f"/v2/tenants/{tenant['id']}"
            renamed, replanned = await asyncio.gather(
                platform.call("PATCH", path, {"name": "Renamed"}),
                other_process.call("PATCH", path, {"metadata": {"plan": "pro"}}),
            )
            assert renamed[0] == replanned[0] == 200, (renamed, replanned)
            for api in (platform, other_process):
                status, both = await api.call("GET", path)
                assert (both["name"], both["metadata"]) == ("Renamed", {"plan": "pro"})
        for minted in keys:
            async with client(second_url, minted["key"]) as second:
                await eventually(
                    lambda: _status(second, "/v2/event-destinations", 200),
                    what="the key works",
                )
                status, revoked = await platform.call(
                    "DELETE", f"/v2/tenants/{tenant['id']}/api-keys/{minted['id']}"
                )
                revoked_s = time.monotonic()
                assert status == 200 and revoked["revoked_at"], revoked
                await eventually(
                    lambda: _status(second, "/v2/event-destinations", 401),
                    timeout_s=1.5,
                    interval_s=0.01,
                    what="the second process refusing the revoked key",
                )
                refused_after_ms.append((time.monotonic() - revoked_s) * 1000)
    shown = ", ".join(f"{ms:.0f}" for ms in refused_after_ms)
    print(f"revocations seen by a second API process after {shown} ms")
    assert max(refused_after_ms) < 1500


async def _status(api: Api, path: str, wanted: int) -> bool:
    status, _ = await api.call("GET", path)
    return status == wanted


async def test_an_idempotency_key_replays_a_create_and_a_minted_key(platform: Api) -> None:
    headers = {"Idempotency-Key": unique("idem")}
    body = {"name": "Once"}
    status, first = await platform.call("POST", "/v2/tenants", body, headers=headers)
    assert status == 201, first
    status, again = await platform.call("POST", "/v2/tenants", body, headers=headers)
    assert (status, again["id"]) == (201, first["id"])
    path = f"/v2/tenants/{first['id']}/api-keys"
    headers = {"Idempotency-Key": unique("idem")}
    status, key = await platform.call("POST", path, {"role": "publish"}, headers=headers)
    assert status == 201, key
    status, replayed = await platform.call("POST", path, {"role": "publish"}, headers=headers)
    assert (status, replayed["key"], replayed["id"]) == (201, key["key"], key["id"])
    _, listed = await platform.call("GET", path)
    assert [k["id"] for k in listed["data"]] == [key["id"]]
