"""Publishers by destination: opened once, reused, closed when the destination changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from pipeline.crypto import CryptoError, Sealer
from pipeline.ids import scoped, unscoped
from pipeline.settings import Settings
from pipeline.sinks import load_sink
from pipeline.sinks.base import PermanentError, Publisher, Target


class PublisherCache:
    """At most `capacity` open publishers (the `sink_client_cache_size` setting unless
    given), least recently used closed first; one open at a time per destination. By
    `tenant/id` (ids are scoped per tenant), reopened for every new version of the record
    (a destination created again under a deleted one's id is a new version too)."""

    def __init__(self, settings: Settings, sealer: Sealer, capacity: int | None = None) -> None:
        self._settings = settings
        self._sealer = sealer
        size = capacity if capacity is not None else settings.sink_client_cache_size
        self._capacity = max(1, size)  # the publisher just opened is always kept
        self._open: OrderedDict[str, tuple[str, Publisher]] = OrderedDict()
        # Per destination: the lock its opens take, and how many deliveries hold or wait for it.
        self._opening: dict[str, tuple[asyncio.Lock, int]] = {}

    async def get(self, destination: dict[str, Any]) -> Publisher:
        """The publisher for the destination's current record (reopened if it changed).

        Concurrent deliveries to one destination open one client: the others wait for it.
        """
        cached = self._cached(destination)
        if cached is not None:
            return cached
        async with self._opening_lock(_key(destination)):
            cached = self._cached(destination)  # opened while this delivery waited
            return cached if cached is not None else await self._reopen(destination)

    def _cached(self, destination: dict[str, Any]) -> Publisher | None:
        key = _key(destination)
        cached = self._open.get(key)
        if cached is None or cached[0] != _version(destination):
            return None
        self._open.move_to_end(key)
        return cached[1]

    @contextlib.asynccontextmanager
    async def _opening_lock(self, destination_id: str) -> AsyncIterator[None]:
        lock, users = self._opening.get(destination_id, (asyncio.Lock(), 0))
        self._opening[destination_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._opening[destination_id]
            if users == 1:
                del self._opening[destination_id]
            else:
                self._opening[destination_id] = (lock, users - 1)

    async def _reopen(self, destination: dict[str, Any]) -> Publisher:
        destination_id = destination["id"]
        key = _key(destination)
        version = _version(destination)
        stale = self._open.pop(key, None)
        if stale is not None:
            await stale[1].close()
        try:
            sink = load_sink(destination["type"])
        except ValueError as exc:
            raise PermanentError(str(exc)) from exc
        credentials = self._credentials(destination)
        publisher = await sink.open(
            Target(destination_id, destination.get("config") or {}, credentials), self._settings
        )
        self._open[key] = (version, publisher)
        self._open.move_to_end(key)
        while len(self._open) > self._capacity:
            _, (_, oldest) = self._open.popitem(last=False)
            await oldest.close()
        return publisher

    def _credentials(self, destination: dict[str, Any]) -> dict[str, Any]:
        sealed = destination.get("sealed")
        if not sealed:
            return {}
        try:
            return self._sealer.open(sealed, destination["id"])
        except CryptoError as exc:
            raise PermanentError("destination credentials cannot be decrypted") from exc

    async def prune(self, current: Callable[[str, str], Mapping[str, Any] | None]) -> int:
        """Close the publishers of destinations deleted, disabled or changed since they were
        opened (`current(tenant, id)` looks one up in the view); how many were closed.

        A delivery still using one fails retryably and is retried on a fresh publisher.
        """
        stale = []
        for key, (version, _) in self._open.items():
            tenant, destination_id = unscoped(key)
            destination = current(tenant or "", destination_id)
            if (
                destination is None
                or destination.get("status") == "inactive"
                or _version(destination) != version
            ):
                stale.append(key)
        for key in stale:
            _, publisher = self._open.pop(key)
            await publisher.close()
        return len(stale)

    def __len__(self) -> int:
        return len(self._open)

    async def aclose(self) -> None:
        """Close every publisher."""
        while self._open:
            _, (_, publisher) = self._open.popitem()
            await publisher.close()


def _version(destination: Mapping[str, Any]) -> str:
    """What identifies one version of a destination's record."""
    return str(destination["updated_at"]) + str(destination.get("change_id", ""))


def _key(destination: Mapping[str, Any]) -> str:
    """The cache key: ids are scoped per tenant."""
    return scoped(destination["tenant"], destination["id"])
