"""Tenants and their API keys: a fold of the `tenant-changes` topic, kept by every API process.

The API appends a change (create or update a tenant, delete it, mint or revoke a key) and
every API process folds the topic, in its one total order, into the same state: a PATCH is
merged onto whatever the fold holds when it gets there (two concurrent PATCHes of one tenant
both take effect, the later one's fields last), and of two creates of one id the first wins
everywhere. The writer waits for its own change to be folded here, so its response (and its
next read) shows it; other processes see it as soon as their follow loop reads it, which is
well within a second (FETCH_WAIT_MS): a revoked key is refused everywhere that fast.

Only hashes of keys are ever in the topic or here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord

from pipeline.follow import TopicFollower
from pipeline.topics import TENANT_CHANGES

log = logging.getLogger(__name__)

# How long the broker may hold the follower's fetch when there is nothing new. A change ends
# the wait at once anyway; this bounds the rest, so a revocation is refused in every process
# within about this long after it is appended (plus a fetch round trip).
FETCH_WAIT_MS = 200
FOLLOW_POLL_MS = 500


class TenantViewTimeout(Exception):
    """The view did not reach the wanted state in time."""


class TenantView:
    """Tenant records by id (deleted ones kept, marked) and key records by id and hash."""

    def __init__(self, bootstrap: str, topic: str = TENANT_CHANGES) -> None:
        self._follower = TopicFollower(
            bootstrap, topic, "herald-tenant-view", FETCH_WAIT_MS, FOLLOW_POLL_MS
        )
        self._waiters: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self.tenants: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, dict[str, Any]] = {}
        self._key_by_hash: dict[str, str] = {}
        self.ready = self._follower.ready

    async def start(self) -> None:
        """Read the topic from its start and follow it."""
        await self._follower.start(self._apply, self._on_ready)

    async def stop(self) -> None:
        """Stop following and close the consumers."""
        await self._follower.stop()

    # -- reading -------------------------------------------------------------------------

    def tenant(self, tenant_id: str) -> dict[str, Any] | None:
        """The live tenant record of that id, or None (unknown or deleted)."""
        record = self.tenants.get(tenant_id)
        return None if record is None or record.get("deleted_at") else record

    def deleted(self, tenant_id: str) -> bool:
        """True if a tenant of this id was deleted (its keys and sessions are refused)."""
        record = self.tenants.get(tenant_id)
        return record is not None and bool(record.get("deleted_at"))

    def key_by_hash(self, key_sha256: str) -> dict[str, Any] | None:
        """The key record of that SHA-256 if the key is usable: not revoked, tenant live."""
        key_id = self._key_by_hash.get(key_sha256)
        record = self.keys.get(key_id) if key_id is not None else None
        if record is None or record.get("revoked_at") or self.tenant(record["tenant"]) is None:
            return None
        return record

    def keys_of(self, tenant_id: str) -> list[dict[str, Any]]:
        """Every key record of the tenant, revoked ones included."""
        return [k for k in self.keys.values() if k["tenant"] == tenant_id]

    # -- waiting -------------------------------------------------------------------------

    def expect(self, change_id: str) -> asyncio.Future[dict[str, Any] | None]:
        """A future resolved with what the fold made of `change_id` (the record it created or
        changed, or None if it refused it); call before appending the change."""
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._waiters[change_id] = future
        return future

    async def wait(
        self, future: asyncio.Future[dict[str, Any] | None], change_id: str, timeout_s: float
    ) -> dict[str, Any] | None:
        """Wait for a change registered with `expect` to be folded here."""
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError as exc:
            raise TenantViewTimeout(f"change {change_id} not folded in {timeout_s}s") from exc
        finally:
            self._waiters.pop(change_id, None)

    async def sync(self, timeout_s: float) -> None:
        """Catch up with every change appended before this call (a read barrier: another
        process's write that returned to its caller is visible after it)."""
        wanted = await self._follower.end_offsets()
        if not await self._follower.wait_for(wanted, timeout_s):
            raise TenantViewTimeout(f"tenant view did not reach {wanted} in {timeout_s}s")

    # -- following -----------------------------------------------------------------------

    def _on_ready(self) -> None:
        log.info("tenant view ready: %d tenants, %d keys", len(self.tenants), len(self.keys))

    def _apply(self, message: ConsumerRecord) -> None:
        value = message.value
        if value is None:
            return
        try:
            change = orjson.loads(value)
            result = FOLDS[change["op"]](self, change)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.warning("skipped an unreadable tenant change: %s", type(exc).__name__)
            return
        waiter = self._waiters.get(change.get("change_id", ""))
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    # -- the fold: one function per op; each returns the record it made or changed, or
    # None when the change does not apply (the writer answers 404 or 409). --------------

    def _create_tenant(self, change: dict[str, Any]) -> dict[str, Any] | None:
        existing = self.tenants.get(change["tenant_id"])
        if existing is not None:
            # A create appended twice (an Idempotency-Key retry) is the same create.
            return existing if existing["created_by"] == change["change_id"] else None
        record = {
            "id": change["tenant_id"],
            "name": change["name"],
            "metadata": change["metadata"],
            "created_at": change["at"],
            "updated_at": change["at"],
            "deleted_at": None,
            "created_by": change["change_id"],
        }
        self.tenants[record["id"]] = record
        return record

    def _update_tenant(self, change: dict[str, Any]) -> dict[str, Any] | None:
        current = self.tenant(change["tenant_id"])
        if current is None:
            return None
        record = {**current, **change["fields"], "updated_at": change["at"]}
        self.tenants[record["id"]] = record
        return record

    def _delete_tenant(self, change: dict[str, Any]) -> dict[str, Any] | None:
        current = self.tenants.get(change["tenant_id"])
        if current is None:
            return None
        if not current.get("deleted_at"):
            current = {**current, "deleted_at": change["at"], "updated_at": change["at"]}
            self.tenants[current["id"]] = current
        return current

    def _create_key(self, change: dict[str, Any]) -> dict[str, Any] | None:
        if self.tenant(change["tenant_id"]) is None or change["key_id"] in self.keys:
            return None
        record = {
            "id": change["key_id"],
            "tenant": change["tenant_id"],
            "role": change["role"],
            "name": change["name"],
            "prefix": change["prefix"],
            "key_sha256": change["key_sha256"],
            "created_at": change["at"],
            "revoked_at": None,
        }
        self.keys[record["id"]] = record
        self._key_by_hash[record["key_sha256"]] = record["id"]
        return record

    def _revoke_key(self, change: dict[str, Any]) -> dict[str, Any] | None:
        current = self.keys.get(change["key_id"])
        if current is None or current["tenant"] != change["tenant_id"]:
            return None
        if not current.get("revoked_at"):
            current = self.keys[current["id"]] = {**current, "revoked_at": change["at"]}
        return current


Fold = Callable[[TenantView, dict[str, Any]], "dict[str, Any] | None"]
FOLDS: dict[str, Fold] = {
    "create_tenant": TenantView._create_tenant,
    "update_tenant": TenantView._update_tenant,
    "delete_tenant": TenantView._delete_tenant,
    "create_key": TenantView._create_key,
    "revoke_key": TenantView._revoke_key,
}
