"""Destination records: the pure fold of change records, and the match index.

A change record (topic destination-changes, key = destination id) is
`{"change_id", "op", "at", "fields"?}` with op one of create, update, enable, disable,
delete, verified, auto_disable. The fold turns the current record and one change into the
next record, which the fold agent writes to the compacted `destinations` topic. Every
folded record carries the change id that produced it, so a writer can wait for its own
change, and `change_ok` says whether the change applied.

Credentials are sealed as one value (`sealed`) that only holders of the keys can open, so
a writer that changes them reads the record, opens, merges and seals again. The fold makes
that a compare-and-set: every change that carries `sealed` (every config change does)
moves the record's `sealed_version` on by one, and an update that says which version it
was based on (`sealed_base`) is refused if another such change came first. The writer
then reads the newer record and merges again, so a PATCH racing a rotate-secret cannot
put back the secret the rotation replaced.
A record is keyed by `tenant/id` (ids are scoped per tenant) and carries its `generation`,
the change id of the create that began its life. A destination deleted and created again
under the same id is a new generation: deliveries, and the worker's `verified` and
`auto_disable` changes, name the generation they were made for, and are void for another.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

PENDING = "pending_verification"
ACTIVE = "active"
INACTIVE = "inactive"
ROUTABLE = frozenset({PENDING, ACTIVE})

# Fields a create or update may set; everything else is derived by the fold.
WRITABLE = frozenset(
    {
        "tenant",
        "name",
        "description",
        "type",
        "events",
        "config",
        "sealed",
        "metadata",
        "rate_limit",
        "routes_from",
    }
)


def fold(current: dict[str, Any] | None, change: dict[str, Any]) -> dict[str, Any]:
    """The record after `change`. A delete yields a record with `deleted: True`."""
    op, at, change_id = change["op"], change["at"], change["change_id"]
    if op == "create":
        if current is not None and not current.get("deleted"):
            # The same create again (a retried request appends its change anew) is done.
            done = current.get("generation") == change_id
            return {**current, "change_id": change_id, "change_ok": done}
        return {
            "id": change["destination_id"],
            **_writable(change),
            "status": PENDING,
            "status_reason": None,
            "verified_at": None,
            "created_at": at,
            "updated_at": at,
            "generation": change_id,
            "change_id": change_id,
            "change_ok": True,
            "deleted": False,
            "last_op": "create",
            "sealed_version": 1,
        }
    if current is None or current.get("deleted"):
        return {
            "id": change["destination_id"],
            "deleted": True,
            "change_id": change_id,
            "change_ok": False,
        }
    if op == "delete":
        return {
            "id": current["id"],
            "tenant": current.get("tenant"),
            "deleted": True,
            "change_id": change_id,
            "change_ok": True,
        }
    apply = _OPERATIONS.get(op)
    updates = None
    if apply is not None and _same_life(current, change):
        updates = apply(current, change)
    if updates is None:  # unknown, or nothing to do: the record stays, the change is refused
        return {**current, "change_id": change_id, "change_ok": False}
    return {
        **current,
        **updates,
        "updated_at": at,
        "change_id": change_id,
        "change_ok": True,
        "last_op": op,
    }


def _same_life(current: dict[str, Any], change: dict[str, Any]) -> bool:
    """A change made for one generation (a worker's verified or auto_disable, decided on
    a delivery to it) is void for a destination created again under the same id."""
    generation = change.get("generation")
    return generation is None or generation == current.get("generation")


def _writable(change: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (change.get("fields") or {}).items() if k in WRITABLE}


def _update(current: dict[str, Any], change: dict[str, Any]) -> dict[str, Any] | None:
    updates = _writable(change)
    if "sealed" not in updates:
        return updates
    version = int(current.get("sealed_version") or 0)
    base = change.get("sealed_base")
    if base is not None and base != version:
        return None  # based on credentials (or config) another change has since replaced
    return {**updates, "sealed_version": version + 1}


def _enable(current: dict[str, Any], change: dict[str, Any]) -> dict[str, Any] | None:
    return {"status": ACTIVE if current.get("verified_at") else PENDING, "status_reason": None}


def _disable(current: dict[str, Any], change: dict[str, Any]) -> dict[str, Any] | None:
    return {"status": INACTIVE, "status_reason": change.get("reason") or "disabled"}


def _auto_disable(current: dict[str, Any], change: dict[str, Any]) -> dict[str, Any] | None:
    if current["status"] == INACTIVE:
        return None
    return {"status": INACTIVE, "status_reason": change.get("reason") or "auto-disabled"}


def _verified(current: dict[str, Any], change: dict[str, Any]) -> dict[str, Any] | None:
    if current.get("verified_at"):
        return None
    updates: dict[str, Any] = {"verified_at": change["at"]}
    if current["status"] == PENDING:
        updates["status"] = ACTIVE
    return updates


_OPERATIONS = {
    "update": _update,
    "enable": _enable,
    "disable": _disable,
    "auto_disable": _auto_disable,
    "verified": _verified,
}


def subscribed(patterns: list[str], event_type: str) -> bool:
    """Whether a destination with these patterns takes events of `event_type`."""
    return any(
        p in ("*", event_type) or (p.endswith(".*") and event_type.startswith(p[:-1]))
        for p in patterns
    )


MAX_VERSIONS = 16


class Versions:
    """The recent versions of one destination, by their offset in its partition.

    An event is routed with the destinations as they were at its stamp: a change that
    returned after the event was published must not apply to it, even if the router
    reads the event later, when its view is already newer.
    """

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self._items: list[tuple[int, dict[str, Any]]] = []

    def add(self, offset: int, record: dict[str, Any]) -> None:
        """A newer version, read at `offset`; the oldest beyond MAX_VERSIONS are dropped."""
        self._items.append((offset, record))
        del self._items[:-MAX_VERSIONS]

    @property
    def latest(self) -> dict[str, Any]:
        """The current version."""
        return self._items[-1][1]

    def patterns(self) -> set[str]:
        """Every pattern any kept version subscribes to (for the match index)."""
        return {p for _, record in self._items for p in record.get("events") or ()}

    def as_of(self, stamp: dict[int, int]) -> dict[str, Any] | None:
        """The version in force for an event stamped `stamp`, or None if none was."""
        bound = stamp.get(self.partition)
        if bound is None:
            return self.latest
        earlier = [version for offset, version in self._items if offset < bound]
        if earlier:
            return earlier[-1]
        oldest = self._items[0][1]
        if oldest.get("last_op") == "create":
            return None  # the whole history is here: it did not exist yet
        # History cut short (compaction, or pruning): the creation bound still tells
        # whether it existed when the event was published.
        created_from = (oldest.get("routes_from") or {}).get(str(self.partition), -1)
        return oldest if bound > created_from else None


def prefix_of(pattern: str) -> str | None:
    """`task_run.*` → `task_run.`; None for an exact type or `*`."""
    if pattern != "*" and pattern.endswith(".*"):
        return pattern[:-1]
    return None


class MatchIndex:
    """tenant → event type → destination ids, plus `*` and prefix subscribers.

    Lookup cost grows with the number of dot-separated parts of the type and the number
    of matches, never with the number of destinations.
    """

    def __init__(self) -> None:
        self._exact: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._subscribed: dict[str, tuple[str, Iterable[str]]] = {}

    def put(self, destination_id: str, tenant: str, patterns: Iterable[str]) -> None:
        """(Re)index a destination under its patterns."""
        self.remove(destination_id)
        patterns = tuple(patterns)
        for pattern in patterns:
            key = prefix_of(pattern) or pattern
            self._exact[(tenant, key)].add(destination_id)
        self._subscribed[destination_id] = (tenant, patterns)

    def remove(self, destination_id: str) -> None:
        """Forget a destination."""
        entry = self._subscribed.pop(destination_id, None)
        if entry is None:
            return
        tenant, patterns = entry
        for pattern in patterns:
            key = (tenant, prefix_of(pattern) or pattern)
            ids = self._exact.get(key)
            if ids is not None:
                ids.discard(destination_id)
                if not ids:
                    del self._exact[key]

    def match(self, tenant: str, event_type: str) -> set[str]:
        """Ids of the destinations of `tenant` subscribed to `event_type`."""
        found: set[str] = set()
        keys = [event_type, "*"]
        dot = event_type.find(".")
        while dot != -1:
            keys.append(event_type[: dot + 1])
            dot = event_type.find(".", dot + 1)
        for key in keys:
            ids = self._exact.get((tenant, key))
            if ids:
                found |= ids
        return found
