"""Bearer API keys: looked up by SHA-256, each with a tenant and a role."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pipeline.settings import Settings

MANAGE = "manage"
PUBLISH = "publish"
ROLE_ATTRIBUTE = "herald_required_role"

H = TypeVar("H", bound=Callable[..., Any])


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant and what its key may do."""

    tenant: str
    role: str
    key_sha256: str = ""  # which key: rate limits are per key, not per tenant

    def may(self, needed: str) -> bool:
        """`manage` may do everything; `publish` only publishing."""
        return self.role == MANAGE or self.role == needed


class KeyRing:
    """The configured keys, by hash; the plaintext keys are never kept."""

    def __init__(self, settings: Settings) -> None:
        self._by_hash: dict[str, Principal] = {
            k.key_sha256: Principal(k.tenant, k.role, k.key_sha256) for k in settings.api_keys
        }
        if settings.dev_api_key is not None:
            digest = hash_key(settings.dev_api_key.get_secret_value())
            self._by_hash[digest] = Principal(settings.dev_tenant, MANAGE, digest)

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal for an `Authorization: Bearer …` header, or None."""
        if not authorization:
            return None
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        # A dict lookup by hash is safe: timing reveals only a SHA-256 of a random key.
        return self._by_hash.get(hash_key(key.strip()))


def hash_key(key: str) -> str:
    """The hex SHA-256 of an API key, as configured in HERALD_API_KEYS."""
    return hashlib.sha256(key.encode()).hexdigest()


def requires(role: str) -> Callable[[H], H]:
    """Mark a route handler as allowed for `role` (every other handler needs `manage`)."""

    def mark(handler: H) -> H:
        setattr(handler, ROLE_ATTRIBUTE, role)
        return handler

    return mark


def required_role(handler: Callable[..., Any]) -> str:
    """The role a route handler needs: `manage` unless marked with `requires`."""
    return str(getattr(handler, ROLE_ATTRIBUTE, MANAGE))
