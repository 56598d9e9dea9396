"""Who a request is and what it may do: keys, Herald-Tenant, portal session tokens, roles."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from api.app import create_app
from api.auth import (
    MANAGE,
    PLATFORM,
    PORTAL,
    PUBLISH,
    KeyRing,
    Principal,
    allowed_roles,
    authorize,
    hash_key,
    requires,
)
from api.errors import ApiError, RequestValidationError
from api.openapi import build_spec
from api.portal_sessions import AUDIENCE, ISSUER, PortalTokens, SessionRequest, parse_request
from api.tenants import tenant_fields
from pipeline.crypto import generate_key
from pipeline.settings import ApiKey, Settings

SIGNING_KEY = "unit-test-portal-signing-key-0123456789abcdef"


class Tenants:
    """A TenantLookup of plain dicts."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, dict[str, Any]] = {}

    def tenant(self, tenant_id: str) -> dict[str, Any] | None:
        record = self.records.get(tenant_id)
        return None if record is None or record.get("deleted_at") else record

    def deleted(self, tenant_id: str) -> bool:
        return bool(self.records.get(tenant_id, {}).get("deleted_at"))

    def key_by_hash(self, key_sha256: str) -> dict[str, Any] | None:
        record = self.keys.get(key_sha256)
        if record is None or record.get("revoked_at") or self.tenant(record["tenant"]) is None:
            return None
        return record


def settings(**extra: Any) -> Settings:
    return Settings(
        dev_api_key="sk_dev",
        dev_tenant="dev",
        api_keys=[
            ApiKey(key_sha256=hash_key("sk_platform"), role="platform"),
            ApiKey(key_sha256=hash_key("sk_publish"), tenant="dev", role="publish"),
        ],
        portal_signing_key=SIGNING_KEY,
        **extra,
    )


@pytest.fixture
def tenants() -> Tenants:
    found = Tenants()
    found.records["acme"] = {"id": "acme"}
    found.keys[hash_key("hk_live_acme")] = {"tenant": "acme", "role": "publish"}
    return found


def refusal(ring: KeyRing, key: str | None, tenant: str | None = None) -> tuple[int, str | None]:
    with pytest.raises(ApiError) as caught:
        ring.authenticate(None if key is None else f"Bearer {key}", tenant)
    return caught.value.status, caught.value.field


def test_configured_and_minted_keys(tenants: Tenants) -> None:
    ring = KeyRing(settings(), tenants)
    assert ring.authenticate("Bearer sk_dev", None) == Principal("dev", MANAGE, hash_key("sk_dev"))
    assert ring.authenticate("bearer  hk_live_acme ", None).role == PUBLISH
    assert ring.authenticate("Bearer sk_platform", None).role == PLATFORM
    assert refusal(ring, None) == (401, None)
    assert refusal(ring, "sk_unknown") == (401, None)
    with pytest.raises(ApiError):
        ring.authenticate("Basic sk_dev", None)


def test_a_revoked_key_or_a_deleted_tenant_is_refused(tenants: Tenants) -> None:
    ring = KeyRing(settings(), tenants)
    tenants.keys[hash_key("hk_live_acme")]["revoked_at"] = "2026-12-02T10:00:00.000Z"
    assert refusal(ring, "hk_live_acme") == (401, None)
    tenants.records["dev"] = {"id": "dev", "deleted_at": "2026-12-02T10:00:00.000Z"}
    assert refusal(ring, "sk_dev") == (401, None)  # configured keys of a deleted tenant too
    assert ring.authenticate("Bearer sk_platform", None).role == PLATFORM


def test_herald_tenant_with_a_platform_key(tenants: Tenants) -> None:
    ring = KeyRing(settings(), tenants)
    platform_hash = hash_key("sk_platform")
    assert ring.authenticate("Bearer sk_platform", "acme") == Principal(
        "acme", MANAGE, platform_hash
    )
    # A tenant named only by configured keys needs no record.
    assert ring.authenticate("Bearer sk_platform", "dev").tenant == "dev"
    assert refusal(ring, "sk_platform", "nobody") == (404, "Herald-Tenant")
    tenants.records["acme"]["deleted_at"] = "2026-12-02T10:00:00.000Z"
    assert refusal(ring, "sk_platform", "acme") == (404, "Herald-Tenant")


def test_herald_tenant_with_a_tenant_key_names_only_its_own(tenants: Tenants) -> None:
    ring = KeyRing(settings(), tenants)
    assert ring.authenticate("Bearer sk_dev", "dev").tenant == "dev"
    assert refusal(ring, "sk_dev", "acme") == (403, "Herald-Tenant")
    assert refusal(ring, "hk_live_acme", "dev") == (403, "Herald-Tenant")
    assert refusal(ring, "sk_dev", "nobody") == (403, "Herald-Tenant")  # existence not told


def test_roles_of_routes() -> None:
    @requires(PUBLISH)
    async def publish() -> None: ...

    @requires(PORTAL)
    async def destinations() -> None: ...

    @requires(PLATFORM)
    async def tenants() -> None: ...

    async def events() -> None: ...

    assert allowed_roles(publish) == {MANAGE, PUBLISH}
    assert allowed_roles(destinations) == {MANAGE, PORTAL}
    assert allowed_roles(tenants) == {PLATFORM}
    assert allowed_roles(events) == {MANAGE}
    for role, handler in ((MANAGE, destinations), (PORTAL, destinations), (PLATFORM, tenants)):
        authorize(Principal("t", role), allowed_roles(handler))
    for role, handler in ((PORTAL, publish), (PORTAL, tenants), (MANAGE, tenants)):
        with pytest.raises(ApiError) as caught:
            authorize(Principal("t", role), allowed_roles(handler))
        assert (caught.value.status, caught.value.field) == (403, None)
    with pytest.raises(ApiError) as caught:
        authorize(Principal("", PLATFORM), allowed_roles(destinations))
    assert (caught.value.status, caught.value.field) == (403, "Herald-Tenant")
    assert "Herald-Tenant" in caught.value.message


def session(tenants: Tenants, ring_settings: Settings, **claims: Any) -> str:
    token, _ = PortalTokens(ring_settings).mint("acme", SessionRequest(None, None, 3600))
    if not claims:
        return token
    payload = jwt.decode(token, SIGNING_KEY, algorithms=["HS256"], audience=AUDIENCE)
    return jwt.encode({**payload, **claims}, SIGNING_KEY, algorithm="HS256")


def test_portal_session_tokens(tenants: Tenants) -> None:
    ring_settings = settings()
    ring = KeyRing(ring_settings, tenants)
    token = session(tenants, ring_settings)
    principal = ring.authenticate(f"Bearer {token}", None)
    assert (principal.tenant, principal.role) == ("acme", PORTAL)
    assert token not in principal.key_sha256  # the rate-limit bucket is the tenant's
    assert ring.authenticate(f"Bearer {token}", "acme").role == PORTAL
    assert refusal(ring, token, "dev") == (403, "Herald-Tenant")
    now_s = int(time.time())
    for bad in (
        session(tenants, ring_settings, exp=now_s - 1),
        session(tenants, ring_settings, aud="someone-else"),
        session(tenants, ring_settings, iss="not-herald"),
        session(tenants, ring_settings, sub="nobody"),
        jwt.encode({"sub": "acme"}, "another-key-of-32-bytes-or-more-000000", algorithm="HS256"),
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
    ):
        assert refusal(ring, bad) == (401, None)
    tenants.records["acme"]["deleted_at"] = "2026-12-02T10:00:00.000Z"
    assert refusal(ring, token) == (401, None)


def test_an_expired_token_says_so(tenants: Tenants) -> None:
    ring_settings = settings()
    expired = session(tenants, ring_settings, exp=int(time.time()) - 5)
    with pytest.raises(ApiError) as caught:
        KeyRing(ring_settings, tenants).authenticate(f"Bearer {expired}", None)
    assert "expired" in caught.value.message
    assert expired not in caught.value.message


def test_without_a_signing_key_no_session_is_minted_or_accepted(tenants: Tenants) -> None:
    signed = session(tenants, settings())
    bare = Settings(dev_api_key="sk_dev")
    with pytest.raises(ApiError) as caught:
        PortalTokens(bare).mint("acme", SessionRequest(None, None, 3600))
    assert (caught.value.status, caught.value.code) == (503, "portal_not_configured")
    assert refusal(KeyRing(bare, tenants), signed) == (401, None)


def test_the_token_carries_the_fixed_claims() -> None:
    request = parse_request(
        {
            "return_url": "https://platform.example/back",
            "theme": {"primary_color": "#1a2B3c", "logo_url": "https://x.test/l.png", "name": "P"},
            "expires_in_s": 600,
        },
        settings(),
    )
    token, claims = PortalTokens(settings()).mint("acme", request)
    decoded = jwt.decode(token, SIGNING_KEY, algorithms=["HS256"], audience=AUDIENCE)
    assert decoded == claims
    assert (decoded["iss"], decoded["sub"], decoded["exp"] - decoded["iat"]) == (
        ISSUER,
        "acme",
        600,
    )
    assert decoded["jti"].startswith("ps_")
    assert decoded["return_url"] == "https://platform.example/back"
    assert decoded["theme"]["primary_color"] == "#1a2B3c"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"return_url": "javascript:alert(1)"}, "return_url"),
        ({"return_url": "/relative"}, "return_url"),
        ({"theme": {"primary_color": "red"}}, "theme.primary_color"),
        ({"theme": {"primary_color": "#aabbcc\n"}}, "theme.primary_color"),
        ({"theme": {"logo_url": "ftp://x.test/l.png"}}, "theme.logo_url"),
        ({"theme": {"name": ""}}, "theme.name"),
        ({"theme": {"font": "x"}}, "theme.font"),
        ({"theme": "dark"}, "theme"),
        ({"expires_in_s": 86401}, "expires_in_s"),
        ({"expires_in_s": 59}, "expires_in_s"),
        ({"expires_in_s": True}, "expires_in_s"),
        ({"colour": "red"}, "colour"),
        ([], "body"),
    ],
)
def test_bad_session_bodies_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(RequestValidationError) as caught:
        parse_request(body, settings())
    assert field in caught.value.errors


def test_a_platform_key_needs_no_tenant_and_others_do() -> None:
    assert ApiKey(key_sha256=hash_key("p"), role="platform", tenant="ignored").tenant == ""
    with pytest.raises(ValueError, match="needs a tenant"):
        ApiKey(key_sha256=hash_key("m"), role="manage")


def test_the_spec_says_which_routes_a_portal_session_may_use() -> None:
    """An operation lists the PortalSession scheme exactly when its handler admits the
    `portal` role, and every tenant route takes the Herald-Tenant header."""
    spec = build_spec()
    app = create_app(Settings(encryption_keys=generate_key()))  # not started: no I/O
    for route in app.router.routes():
        resource = route.resource
        if resource is None or not resource.canonical.startswith("/v2/") or route.method == "HEAD":
            continue
        item = spec["paths"][resource.canonical]
        operation = item[route.method.lower()]
        schemes = {name for entry in operation.get("security", []) for name in entry}
        roles = allowed_roles(route.handler)
        assert ("PortalSession" in schemes) == (PORTAL in roles), resource.canonical
        parameters = {p["$ref"] for p in item.get("parameters", []) if "$ref" in p}
        takes_header = "#/components/parameters/HeraldTenant" in parameters
        assert takes_header == (PLATFORM not in roles), (route.method, resource.canonical)


@pytest.mark.parametrize(
    "url",
    ["https://\x0f\u00a9h", "https://x.test/a b", "https://x.test/\u00e9", "http://x.test/\t"],
)
def test_session_urls_are_printable_ascii(url: str) -> None:
    for body, field in (
        ({"return_url": url}, "return_url"),
        ({"theme": {"logo_url": url}}, "theme.logo_url"),
    ):
        with pytest.raises(RequestValidationError) as caught:
            parse_request(body, settings())
        assert field in caught.value.errors


@pytest.mark.parametrize("tenant_id", ["has space", "x" * 65, "a/b", "abc\n", "", 7])
def test_bad_tenant_ids(tenant_id: Any) -> None:
    with pytest.raises(RequestValidationError) as caught:
        tenant_fields({"id": tenant_id, "name": "n"}, create=True)
    assert list(caught.value.errors) == ["id"]
