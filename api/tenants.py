"""Tenant and API-key operations: every write is a change appended to `tenant-changes`.

The routes (api/routes/tenants.py) call these for a platform key. Each write appends one
change and waits until this process's tenant view has folded it (api/tenant_view.py), so
the response shows it; the fold decides conflicts (a taken id, a key of a deleted tenant)
the same way in every process.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from api import validation
from api.auth import MANAGE, PUBLISH, Principal, hash_key
from api.destinations import Destinations
from api.errors import ApiError, RequestValidationError, not_found, unavailable
from api.stable_ids import IdSource
from api.tenant_view import TenantView, TenantViewTimeout
from pipeline import ids
from pipeline.destinations import INACTIVE
from pipeline.settings import Settings
from pipeline.sinks.fields import FieldErrors
from pipeline.timeutil import now_iso
from pipeline.topics import TENANT_CHANGES

TENANT_PREFIX = "ten_"
KEY_ID_PREFIX = "key_"
# Minted keys: a fixed, distinctive prefix (secret scanners can match `hk_live_` plus 43
# base64url characters, and a reader tells a Herald key from others at a glance) and 32
# random bytes. The list shows the first PREFIX_CHARS: the marker and 4 random characters.
KEY_PREFIX = "hk_live_"
KEY_RANDOM_BYTES = 32
PREFIX_CHARS = len(KEY_PREFIX) + 4
TENANT_FIELDS = {"id", "name", "metadata"}
KEY_ROLES = (MANAGE, PUBLISH)
MAX_KEY_NAME = 200
# Destinations of a deleted tenant disabled at once (each is a change the worker folds).
DISABLES_IN_FLIGHT = 16


def tenant_fields(body: Any, *, create: bool) -> dict[str, Any]:
    """The validated fields of a create (id?, name, metadata) or a PATCH (name?, metadata?)."""
    if not isinstance(body, dict):
        raise RequestValidationError({"body": ["must be a JSON object."]})
    errors = FieldErrors()
    known = TENANT_FIELDS if create else TENANT_FIELDS - {"id"}
    for unknown in sorted(set(body) - known):
        errors.add(unknown, "is not a known field.")
    checks = validation.COMMON_CHECKS
    fields = {
        name: checks[name](errors, body) for name in ("name", "metadata") if create or name in body
    }
    if create:
        tenant_id = body.get("id")
        if tenant_id is not None:
            validation.tenant_id(errors, tenant_id, "id")
        fields["id"] = tenant_id
    if errors:
        raise RequestValidationError(errors.by_field)
    return fields


def key_fields(body: Any) -> tuple[str, str | None]:
    """The role and name of a POST /v2/tenants/{id}/api-keys body."""
    if not isinstance(body, dict):
        raise RequestValidationError({"body": ["must be a JSON object."]})
    errors = FieldErrors()
    for unknown in sorted(set(body) - {"role", "name"}):
        errors.add(unknown, "is not a known field.")
    role = body.get("role")
    if role not in KEY_ROLES:
        errors.add("role", f"is required: one of {', '.join(KEY_ROLES)}.")
    name = body.get("name")
    if name is not None and (
        not isinstance(name, str) or not name.strip() or len(name) > MAX_KEY_NAME
    ):
        errors.add("name", f"must be a non-empty string of at most {MAX_KEY_NAME} characters.")
    if errors:
        raise RequestValidationError(errors.by_field)
    return str(role), name


class Tenants:
    """Create, change and delete tenants; mint and revoke their keys."""

    def __init__(
        self,
        settings: Settings,
        view: TenantView,
        producer: AIOKafkaProducer,
        destinations: Destinations,
    ) -> None:
        self._settings = settings
        self._view = view
        self._producer = producer
        self._destinations = destinations

    async def sync(self) -> None:
        """Make the view include every change that returned anywhere before this call."""
        try:
            await self._view.sync(self._settings.view_wait_timeout_s)
        except (KafkaError, TenantViewTimeout) as exc:
            raise unavailable("Tenants cannot be read consistently right now; retry.") from exc

    def get(self, tenant_id: str) -> dict[str, Any]:
        """The live tenant of that id, or 404."""
        record = self._view.tenant(tenant_id)
        if record is None:
            raise not_found("tenant")
        return record

    def all(self) -> list[dict[str, Any]]:
        """Every live tenant, newest first."""
        live = [t for t in self._view.tenants.values() if not t.get("deleted_at")]
        return sorted(live, key=lambda t: (t["created_at"], t["id"]), reverse=True)

    async def create(self, fields: dict[str, Any], source: IdSource) -> dict[str, Any]:
        """Create a tenant (409 if the id is taken, by a live or a deleted tenant: a deleted
        tenant's id is never handed to another, whose keys would then see its old data)."""
        tenant_id = fields["id"] or source.id(TENANT_PREFIX)
        change_id = source.id(ids.CHANGE, "tenant")
        record = await self._change(
            tenant_id,
            "create_tenant",
            change_id,
            name=fields["name"],
            metadata=fields["metadata"],
            at=source.now(),
        )
        if record is None:
            raise ApiError(
                409,
                "resource_already_exists",
                f"A tenant with id '{tenant_id}' exists or existed.",
                field="id",
            )
        return record

    async def update(self, tenant_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Merge the given fields onto the tenant (at fold time: concurrent PATCHes of other
        fields are kept)."""
        current = self.get(tenant_id)
        if not fields:
            return current
        record = await self._change(tenant_id, "update_tenant", fields=fields)
        if record is None:
            raise not_found("tenant")  # deleted between our read and the fold
        return record

    async def delete(self, tenant_id: str) -> list[str]:
        """Delete the tenant (its keys and portal sessions are refused from the fold on)
        and disable its destinations; the ids disabled. Repeating it finishes a delete that
        was interrupted before every destination was disabled."""
        if tenant_id not in self._view.tenants:
            raise not_found("tenant")
        await self._change(tenant_id, "delete_tenant")
        owner = Principal(tenant_id, MANAGE)
        active = [d["id"] for d in self._destinations.all_for(owner) if d["status"] != INACTIVE]
        slots = asyncio.Semaphore(DISABLES_IN_FLIGHT)

        async def disable(destination_id: str) -> None:
            async with slots:
                try:
                    await self._destinations.set_enabled(owner, destination_id, False)
                except ApiError as exc:
                    if exc.status != 404:  # deleted meanwhile: nothing left to disable
                        raise

        await asyncio.gather(*(disable(d) for d in active))
        return active

    def keys(self, tenant_id: str) -> list[dict[str, Any]]:
        """The tenant's keys, newest first, revoked ones included."""
        self.get(tenant_id)
        found = self._view.keys_of(tenant_id)
        return sorted(found, key=lambda k: (k["created_at"], k["id"]), reverse=True)

    async def mint_key(
        self, tenant_id: str, role: str, name: str | None
    ) -> tuple[dict[str, Any], str]:
        """A new key of the tenant, and the key itself (only its hash is stored)."""
        self.get(tenant_id)
        key = KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)
        record = await self._change(
            tenant_id,
            "create_key",
            key_id=ids.new_id(KEY_ID_PREFIX),
            role=role,
            name=name,
            prefix=key[:PREFIX_CHARS],
            key_sha256=hash_key(key),
        )
        if record is None:
            raise not_found("tenant")  # deleted between our read and the fold
        return record, key

    async def revoke_key(self, tenant_id: str, key_id: str) -> dict[str, Any]:
        """Revoke a key: every API process refuses it once its view has the change (well
        within a second). Revoking a revoked key changes nothing."""
        self.get(tenant_id)
        current = self._view.keys.get(key_id)
        if current is None or current["tenant"] != tenant_id:
            raise not_found("API key")
        if current.get("revoked_at"):
            return current
        record = await self._change(tenant_id, "revoke_key", key_id=key_id)
        if record is None:
            raise not_found("API key")
        return record

    async def _change(
        self, tenant_id: str, op: str, change_id: str | None = None, **fields: Any
    ) -> dict[str, Any] | None:
        """Append a change (keyed by tenant id) and wait until this process's view folded
        it; what the fold made of it (None: it did not apply)."""
        change_id = change_id or ids.new_id(ids.CHANGE)
        change = {"change_id": change_id, "op": op, "tenant_id": tenant_id, "at": now_iso()}
        change.update(fields)
        folded = self._view.expect(change_id)
        try:
            await self._producer.send_and_wait(
                TENANT_CHANGES, orjson.dumps(change), key=tenant_id.encode()
            )
            return await self._view.wait(folded, change_id, self._settings.view_wait_timeout_s)
        except KafkaError as exc:
            folded.cancel()
            raise unavailable("The event broker is unreachable; nothing was changed.") from exc
        except TenantViewTimeout as exc:
            raise unavailable(
                "The change was accepted but is not visible yet; retry to see its result."
            ) from exc
