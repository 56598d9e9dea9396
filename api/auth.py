"""Who is calling, and what it may do: API keys, portal session tokens and Herald-Tenant.

A bearer credential is one of
- a key configured in HERALD_API_KEYS / HERALD_DEV_API_KEY (looked up by SHA-256),
- a key minted through the tenants API (looked up by SHA-256 in the tenant view; refused
  once revoked or once its tenant is deleted),
- a portal session token (a JWT, api/portal_sessions.py) for one tenant.

Roles: `manage` (everything for its tenant), `publish` (publishing only), `portal` (the
routes marked for it: destinations, deliveries, reading and replaying an event) and
`platform` (the tenants API; with `Herald-Tenant: <id>` it is a `manage` caller of that
tenant, and without the header it sees no tenant's data).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from api.errors import ApiError, forbidden, unauthorized
from api.portal_sessions import InvalidToken, PortalTokens
from pipeline.settings import Settings

MANAGE = "manage"
PUBLISH = "publish"
PORTAL = "portal"
PLATFORM = "platform"
TENANT_HEADER = "Herald-Tenant"
ROLES_ATTRIBUTE = "herald_allowed_roles"
# A portal session's rate-limit bucket is its tenant's (sessions are many and short-lived;
# their tenants are few).
PORTAL_BUCKET = "portal/"

H = TypeVar("H", bound=Callable[..., Any])


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant ("" for a platform key without Herald-Tenant) and a role."""

    tenant: str
    role: str
    key_sha256: str = ""  # which key: rate limits are per key, not per tenant


class TenantLookup(Protocol):
    """What authentication reads of the tenants (api/tenant_view.py's TenantView)."""

    def tenant(self, tenant_id: str) -> dict[str, Any] | None:
        """The live tenant record, or None."""

    def deleted(self, tenant_id: str) -> bool:
        """True if the tenant was deleted."""

    def key_by_hash(self, key_sha256: str) -> dict[str, Any] | None:
        """A usable minted key's record, or None."""


class KeyRing:
    """The configured keys by hash (never the keys), and the tenants' own keys and tokens."""

    def __init__(self, settings: Settings, tenants: TenantLookup) -> None:
        self._by_hash: dict[str, Principal] = {
            k.key_sha256: Principal(k.tenant, k.role, k.key_sha256) for k in settings.api_keys
        }
        if settings.dev_api_key is not None:
            digest = hash_key(settings.dev_api_key.get_secret_value())
            self._by_hash[digest] = Principal(settings.dev_tenant, MANAGE, digest)
        # Tenants named by configured keys exist without a record (Herald-Tenant may name them).
        self._configured_tenants = {p.tenant for p in self._by_hash.values() if p.tenant}
        self._tenants = tenants
        self._portal = PortalTokens(settings)

    def authenticate(self, authorization: str | None, acting_for: str | None) -> Principal:
        """The caller of a request with these `Authorization` and `Herald-Tenant` headers;
        raises the 401, 403 or 404 ApiError that refuses it."""
        token = _bearer(authorization)
        if token is None:
            raise unauthorized()
        principal = self._principal(token)
        if acting_for is None:
            return principal
        if principal.role == PLATFORM:
            if not self.exists(acting_for):
                raise ApiError(
                    404,
                    "tenant_missing",
                    f"The {TENANT_HEADER} header names no tenant (or a deleted one).",
                    field=TENANT_HEADER,
                )
            return Principal(acting_for, MANAGE, principal.key_sha256)
        if acting_for != principal.tenant:
            raise forbidden(
                f"Only a platform key may act for another tenant with {TENANT_HEADER}; "
                "this credential's own tenant is the only one it may name.",
                field=TENANT_HEADER,
            )
        return principal

    def exists(self, tenant_id: str) -> bool:
        """True if the tenant may be acted for: it has a live record, or configured keys
        name it and it was not deleted."""
        if self._tenants.tenant(tenant_id) is not None:
            return True
        return tenant_id in self._configured_tenants and not self._tenants.deleted(tenant_id)

    def _principal(self, token: str) -> Principal:
        digest = hash_key(token)
        # A dict lookup by hash is safe: timing reveals only a SHA-256 of a random key.
        configured = self._by_hash.get(digest)
        if configured is not None:
            if configured.role != PLATFORM and self._tenants.deleted(configured.tenant):
                raise unauthorized("This API key's tenant was deleted.")
            return configured
        minted = self._tenants.key_by_hash(digest)
        if minted is not None:
            return Principal(str(minted["tenant"]), str(minted["role"]), digest)
        if token.count(".") == 2:  # header.payload.signature: perhaps a portal session
            return self._portal_principal(token)
        raise unauthorized()

    def _portal_principal(self, token: str) -> Principal:
        try:
            claims = self._portal.verify(token)
        except InvalidToken as exc:
            raise unauthorized(str(exc)) from exc
        tenant = str(claims["sub"])
        if self._tenants.tenant(tenant) is None:
            raise unauthorized("The portal session's tenant no longer exists.")
        return Principal(tenant, PORTAL, PORTAL_BUCKET + tenant)


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def hash_key(key: str) -> str:
    """The hex SHA-256 of an API key, as configured in HERALD_API_KEYS."""
    return hashlib.sha256(key.encode()).hexdigest()


def requires(*roles: str) -> Callable[[H], H]:
    """Mark a route handler as allowed for `roles` besides `manage`, which may use every
    tenant route; a handler marked `requires(PLATFORM)` is for platform keys only. An
    unmarked handler is for `manage` alone."""
    allowed = frozenset(roles)

    def mark(handler: H) -> H:
        setattr(handler, ROLES_ATTRIBUTE, allowed)
        return handler

    return mark


def allowed_roles(handler: Callable[..., Any]) -> frozenset[str]:
    """The roles that may call a route handler (see `requires`)."""
    roles: Iterable[str] = getattr(handler, ROLES_ATTRIBUTE, ())
    marked = frozenset(roles)
    return marked if PLATFORM in marked else marked | {MANAGE}


def authorize(principal: Principal, allowed: frozenset[str]) -> None:
    """403 unless the caller's role is allowed; a platform key on a tenant route is told
    to name the tenant."""
    if principal.role in allowed:
        return
    if principal.role == PLATFORM:
        raise forbidden(
            f"A platform key sees no tenant's data by itself: send {TENANT_HEADER}: "
            "<tenant id> to act for one tenant.",
            field=TENANT_HEADER,
        )
    raise forbidden()
