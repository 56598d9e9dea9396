"""Publishers by destination: opened once, reused, closed when the destination changes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.crypto import CryptoError, Sealer
from pipeline.ids import scoped, unscoped
from pipeline.settings import Settings
from pipeline.sinks import load_sink
from pipeline.sinks.base import PermanentError, Publisher, Target


class PublisherCache:
    """At most `capacity` open publishers, least recently used closed first; by `tenant/id`
    (ids are scoped per tenant), reopened for every new version of the record (a
    destination created again under a deleted one's id is a new version too)."""

    def __init__(self, settings: Settings, sealer: Sealer, capacity: int = 10_000) -> None:
        self._settings = settings
        self._sealer = sealer
        self._capacity = capacity
        self._open: OrderedDict[str, tuple[str, Publisher]] = OrderedDict()

    async def get(self, destination: dict[str, Any]) -> Publisher:
        """The publisher for the destination's current record (reopened if it changed)."""
        destination_id = destination["id"]
        key = scoped(destination["tenant"], destination_id)
        version = _version(destination)
        cached = self._open.get(key)
        if cached is not None and cached[0] == version:
            self._open.move_to_end(key)
            return cached[1]
        if cached is not None:
            await cached[1].close()
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
    return f"{destination['updated_at']}{destination.get('change_id', '')}"
