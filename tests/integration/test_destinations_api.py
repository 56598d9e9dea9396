"""The destination management API against the real stack (broker, worker, API)."""

from __future__ import annotations

import orjson
from standardwebhooks.webhooks import Webhook

from tests.integration.api_client import Api
from tests.support import Receiver, eventually, same_partition_ids


async def test_create_returns_the_reference_shape(api: Api) -> None:
    status, body = await api.call(
        "POST",
        "/v2/event-destinations",
        {
            "name": "Orders",
            "description": "all orders",
            "metadata": {"team": "core"},
            "webhook": {"url": "https://example.com/hooks", "custom_headers": {"X-Team": "core"}},
            "events": ["order.*", "invoice.paid"],
        },
    )
    assert status == 201, body
    assert body["id"].startswith("evtd_")
    assert body["object"] == "event_destination"
    assert body["type"] == "webhook"
    assert body["status"] == "pending_verification"
    assert body["webhook"]["url"] == "https://example.com/hooks"
    assert body["webhook"]["secret"].startswith("whsec_")
    assert body["request_id"].startswith("req_")
    assert body["metadata"] == {"team": "core"}
    assert body["created_at"].endswith("Z")


async def test_validation_errors_name_every_field(api: Api) -> None:
    status, body = await api.call(
        "POST",
        "/v2/event-destinations",
        {"webhook": {"url": "not a url"}, "events": ["*", "a.b"], "colour": "red"},
    )
    assert status == 400
    assert body["status"] == 400
    assert set(body["errors"]) == {"name", "webhook.url", "events", "colour"}
    assert body["traceId"].startswith("req_")


async def test_malformed_bodies_are_400_not_500(api: Api) -> None:
    for data, content_type in (
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b"", "application/json"),
        (b"name=x", "text/plain"),
    ):
        async with api.session.post(
            "/v2/event-destinations", data=data, headers={"Content-Type": content_type}
        ) as response:
            assert response.status == 400, (data, await response.text())
            assert "body" in (await response.json())["errors"]


async def test_supplied_secret_is_never_returned(api: Api) -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    status, body = await api.call(
        "POST",
        "/v2/event-destinations",
        {"name": "s", "webhook": {"url": "https://example.com", "secret": secret}, "events": ["*"]},
    )
    assert status == 201
    assert "secret" not in body["webhook"]
    assert secret not in orjson.dumps(body).decode()


async def test_auth_roles_and_tenants(api: Api, other_tenant: Api, publisher: Api) -> None:
    created = await api.create_webhook("https://example.com/x")
    path = f"/v2/event-destinations/{created['id']}"
    async with api.session.get(path, headers={"Authorization": "Bearer nope"}) as response:
        assert response.status == 401
    assert (await publisher.call("GET", path))[0] == 403
    assert (await publisher.call("POST", "/v2/events", {"type": "a.b", "data": {}}))[0] == 202
    for method, suffix in (
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/disable"),
        ("POST", "/test"),
        ("POST", "/rotate-secret"),
    ):
        status, body = await other_tenant.call(
            method, path + suffix, {"name": "x"} if method == "PATCH" else None
        )
        assert status == 404, (method, suffix, body)
        assert body["errors"][0]["code"] == "resource_missing"
    status, body = await api.call("GET", path)
    assert status == 200
    assert body["status"] == "pending_verification"
    assert body["name"] == "hook"
    assert created["id"] not in [
        d["id"] for d in (await other_tenant.call("GET", "/v2/event-destinations"))[1]["data"]
    ]


async def test_client_supplied_id_and_conflict(api: Api) -> None:
    body = {
        "id": "evtd_my-orders_1",
        "name": "n",
        "webhook": {"url": "https://e.com"},
        "events": ["*"],
    }
    assert (await api.call("POST", "/v2/event-destinations", body))[0] == 201
    status, error = await api.call("POST", "/v2/event-destinations", body)
    assert status == 409
    assert error["errors"][0]["field"] == "id"


async def test_patch_keeps_credentials_and_validates(api: Api, receiver: Receiver) -> None:
    created = await api.create_webhook("https://example.com/old", ["a.b"])
    path = f"/v2/event-destinations/{created['id']}"
    status, body = await api.call(
        "PATCH",
        path,
        {"name": "renamed", "webhook": {"url": f"{receiver.url}/new"}, "events": ["c.*"]},
    )
    assert status == 200, body
    assert (body["name"], body["events"]) == ("renamed", ["c.*"])
    assert body["webhook"] == {"url": f"{receiver.url}/new"}
    assert (await api.call("PATCH", path, {"events": []}))[0] == 400
    status, body = await api.call("PATCH", path, {"type": "kafka"})
    assert status in (400, 422)
    # The secret created with the destination still signs after the PATCH.
    await api.publish("c.d", {"k": 1})
    await eventually(lambda: receiver.requests, what="delivery after PATCH")
    request = receiver.requests[0]
    Webhook(created["webhook"]["secret"]).verify(request.body, request.headers)


async def test_disable_enable_delete(api: Api, receiver: Receiver) -> None:
    # The marker below shares the deleted destination's `deliveries` partition, so its
    # delivery queues behind anything routed to the deleted one.
    deleted_id, marker_id = same_partition_ids(2, prefix="evtd_del")
    created = await api.create_webhook(f"{receiver.url}/d", ["x.y"], id=deleted_id)
    path = f"/v2/event-destinations/{created['id']}"
    status, body = await api.call("POST", path + "/disable")
    assert (status, body["status"]) == (200, "inactive")
    await api.publish("x.y", {"while": "disabled"})
    status, body = await api.call("POST", path + "/enable")
    assert (status, body["status"]) == (200, "pending_verification")
    event_id = await api.publish("x.y", {"while": "enabled"})
    await eventually(lambda: receiver.requests, what="delivery after enable")
    status, body = await api.call("DELETE", path)
    assert (status, body["deleted"]) == (200, True)
    assert (await api.call("GET", path))[0] == 404
    await api.create_webhook(f"{receiver.url}/marker", ["x.y"], id=marker_id)
    # One event for both: once the marker has it, the deleted one would have had it too.
    after_delete = await api.publish("x.y", {"while": "deleted"})
    await eventually(
        lambda: any(orjson.loads(r.body)["id"] == after_delete for r in receiver.requests),
        what="the marker delivery",
    )
    # And one more: the deleted destination's delivery of the first, had there been one,
    # was ahead of this one's in the partition.
    last = await api.publish("x.y", {"while": "still deleted"})
    await eventually(
        lambda: any(orjson.loads(r.body)["id"] == last for r in receiver.requests),
        what="the second marker delivery",
    )
    delivered = [orjson.loads(r.body)["id"] for r in receiver.requests if r.path == "/d"]
    assert delivered == [event_id]


async def test_test_event_and_secret_rotation(api: Api, receiver: Receiver) -> None:
    created = await api.create_webhook(f"{receiver.url}/t", ["never.published"])
    path = f"/v2/event-destinations/{created['id']}"
    status, body = await api.call("POST", path + "/rotate-secret")
    assert status == 200
    new_secret = body["webhook"]["secret"]
    assert new_secret != created["webhook"]["secret"]
    status, body = await api.call("POST", path + "/test")
    assert (status, body["type"]) == (202, "event_destination.test")
    await eventually(lambda: receiver.requests, what="the test event")
    request = receiver.requests[0]
    assert orjson.loads(request.body)["data"]["destination_id"] == created["id"]
    for secret in (created["webhook"]["secret"], new_secret):
        Webhook(secret).verify(request.body, request.headers)

    async def active() -> bool:
        return bool((await api.call("GET", path))[1]["status"] == "active")

    await eventually(active, what="active after the test delivery")


async def test_list_paginates_newest_first(other_tenant: Api) -> None:
    made = [(await other_tenant.create_webhook(f"https://e.com/{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = await other_tenant.call("GET", "/v2/event-destinations" + query)
        assert status == 200
        assert len(page["data"]) <= 2
        seen += [d["id"] for d in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert [i for i in seen if i in made] == list(reversed(made))
    assert (await other_tenant.call("GET", "/v2/event-destinations?limit=0"))[0] == 400
