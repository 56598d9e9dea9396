"""Portal sessions: what a session token may do, for how long, and for which tenant only."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt
import orjson

from tests.integration.api_client import Api
from tests.integration.conftest import PLATFORM_KEY, PORTAL_SIGNING_KEY, Stack
from tests.integration.test_tenants import client, new_tenant
from tests.support import Receiver, eventually


async def open_session(platform: Api, tenant_id: str, body: Any = None) -> dict[str, Any]:
    status, session = await platform.call("POST", f"/v2/tenants/{tenant_id}/portal-sessions", body)
    assert status == 201, session
    return dict(session)


def payload(token: str) -> dict[str, Any]:
    """The token's claims as the portal page reads them (no verification)."""
    encoded = token.split(".")[1]
    claims: dict[str, Any] = orjson.loads(
        base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    )
    return claims


async def test_a_session_has_the_fixed_shape(platform: Api, stack: Stack) -> None:
    tenant = await new_tenant(platform)
    theme = {"primary_color": "#0a7cff", "logo_url": "https://platform.example/logo.svg"}
    session = await open_session(
        platform,
        tenant["id"],
        {"return_url": "https://platform.example/settings", "theme": theme, "expires_in_s": 900},
    )
    assert session["object"] == "portal_session" and session["tenant_id"] == tenant["id"]
    assert session["url"] == f"http://127.0.0.1:8080/portal/#token={session['token']}"
    assert session["return_url"] == "https://platform.example/settings"
    assert session["theme"] == theme
    claims = payload(session["token"])
    assert (claims["iss"], claims["aud"], claims["sub"]) == (
        "herald",
        "herald-portal",
        tenant["id"],
    )
    assert claims["exp"] - claims["iat"] == 900 and claims["jti"]
    assert claims["theme"] == theme and claims["return_url"] == session["return_url"]
    expires_at = time.strptime(session["expires_at"], "%Y-%m-%dT%H:%M:%S.000Z")
    assert abs(time.mktime(expires_at) - time.timezone - claims["exp"]) < 1
    # Defaults: no body at all, one hour.
    bare = await open_session(platform, tenant["id"])
    bare_claims = payload(bare["token"])
    assert bare_claims["exp"] - bare_claims["iat"] == 3600
    assert (bare["return_url"], bare["theme"]) == (None, None)
    status, body = await platform.call(
        "POST", f"/v2/tenants/{tenant['id']}/portal-sessions", {"theme": {"primary_color": "x"}}
    )
    assert (status, list(body["errors"])) == (400, ["theme.primary_color"])
    status, _ = await platform.call("POST", "/v2/tenants/nobody_here/portal-sessions", {})
    assert status == 404


async def test_a_session_token_manages_destinations_and_nothing_else(
    platform: Api, stack: Stack, receiver: Receiver
) -> None:
    tenant = await new_tenant(platform)
    other = await new_tenant(platform)
    session = await open_session(platform, tenant["id"])
    async with client(stack.api_url, PLATFORM_KEY, other["id"]) as theirs:
        their_destination = await theirs.create_webhook(f"{receiver.url}/theirs", ["p.*"])
        async with client(stack.api_url, session["token"]) as portal:
            mine = await portal.create_webhook(f"{receiver.url}/mine", ["portal.*"])
            status, listed = await portal.call("GET", "/v2/event-destinations")
            assert status == 200 and [d["id"] for d in listed["data"]] == [mine["id"]]
            assert (await portal.call("POST", f"/v2/event-destinations/{mine['id']}/test"))[
                0
            ] == 202
            await eventually(lambda: receiver.bodies(), what="the portal's test event")
            # Another tenant's destination does not exist for it.
            path = f"/v2/event-destinations/{their_destination['id']}"
            assert (await portal.call("GET", path))[0] == 404
            assert (await portal.call("DELETE", path))[0] == 404
            # No publishing, no listing of events, no tenants API, no keys.
            for method, route, body in (
                ("POST", "/v2/events", {"type": "portal.made", "data": {}}),
                ("POST", "/v2/events/batch", {"events": [{"type": "portal.made", "data": {}}]}),
                ("GET", "/v2/events", None),
                ("POST", "/v2/tenants", {"name": "sneaky"}),
                ("GET", "/v2/tenants", None),
                ("POST", f"/v2/tenants/{tenant['id']}/api-keys", {"role": "manage"}),
                ("POST", f"/v2/tenants/{tenant['id']}/portal-sessions", {}),
            ):
                status, answer = await portal.call(method, route, body)
                assert status == 403, (method, route, answer)
        # Neither the token nor the session URL is ever logged.
        assert session["token"] not in (stack.logs / "api.log").read_text()
        # The other tenant's destination is untouched.
        status, still = await theirs.call(
            "GET", f"/v2/event-destinations/{their_destination['id']}"
        )
        assert status == 200 and still["name"] == their_destination["name"]


async def test_an_expired_or_forged_session_gets_a_401(platform: Api, stack: Stack) -> None:
    tenant = await new_tenant(platform)
    session = await open_session(platform, tenant["id"])
    claims = payload(session["token"])
    now_s = int(time.time())
    expired = jwt.encode(
        {**claims, "iat": now_s - 120, "exp": now_s - 60}, PORTAL_SIGNING_KEY, algorithm="HS256"
    )
    forged = jwt.encode(claims, "not-the-signing-key-of-this-stack-000000", algorithm="HS256")
    for token, says in ((expired, "expired"), (forged, "not valid")):
        async with client(stack.api_url, token) as portal:
            status, body = await portal.call("GET", "/v2/event-destinations")
            assert status == 401, body
            assert says in body["errors"][0]["message"]
            assert token not in str(body)


async def test_deleting_the_tenant_ends_its_sessions(platform: Api, stack: Stack) -> None:
    tenant = await new_tenant(platform)
    session = await open_session(platform, tenant["id"])
    async with client(stack.api_url, session["token"]) as portal:
        assert (await portal.call("GET", "/v2/event-destinations"))[0] == 200
        assert (await platform.call("DELETE", f"/v2/tenants/{tenant['id']}"))[0] == 200
        assert (await portal.call("GET", "/v2/event-destinations"))[0] == 401


async def test_the_portal_path_needs_no_credential(stack: Stack) -> None:
    """The static portal is served without a key (its page sends the token itself): the
    middleware lets /portal through to whatever serves it, here nothing yet (404)."""
    async with client(stack.api_url, "no-such-key") as anonymous:
        status, _ = await anonymous.call("GET", "/portal/")
        assert status != 401
        status, _ = await anonymous.call("GET", "/v2/event-destinations")
        assert status == 401
