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

import sys
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from pipeline.filters import Filter, compiled

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
        "filter",
        "ordering",
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


def encode(record: dict[str, Any]) -> bytes:
    """A folded record as the fold agent's table keeps it (and the worker's view shares).

    orjson returns its result in the buffer it wrote it into, several KB whatever the
    length; a record is held for as long as it is current, so it is copied into bytes of
    its own size (8 KB → under 1 KB for a typical record)."""
    return bytes(memoryview(orjson.dumps(record)))


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


def subscribed(patterns: Iterable[str], event_type: str) -> bool:
    """Whether a destination with these patterns takes events of `event_type`."""
    return any(
        p in ("*", event_type) or (p.endswith(".*") and event_type.startswith(p[:-1]))
        for p in patterns
    )


MAX_VERSIONS = 16


class Route:
    """How a version with a content filter routes: its patterns (iterating a Route gives
    them, as iterating a plain tuple of patterns does) and its compiled filter."""

    __slots__ = ("filter", "patterns")

    def __init__(self, patterns: tuple[str, ...], content_filter: Filter) -> None:
        self.patterns = patterns
        self.filter = content_filter

    def __iter__(self) -> Iterator[str]:
        return iter(self.patterns)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Route)
            and other.patterns == self.patterns
            and other.filter == self.filter
        )

    def __hash__(self) -> int:
        return hash((self.patterns, self.filter))


# How one version of a destination routes: the event patterns it takes while routable
# (pending or active), with its filter if it has one, or None while it takes no events
# (inactive, or not created yet). Most destinations have no filter: a plain tuple keeps
# them as small as before.
Routing = tuple[str, ...] | Route | None


def routing_of(record: dict[str, Any]) -> Routing:
    """What routing reads of a record; the patterns are interned, as many destinations
    subscribe to the same few. A filter is compiled here, once per version read."""
    if record.get("status") not in ROUTABLE:
        return None
    patterns = tuple(sys.intern(str(p)) for p in record.get("events") or ())
    document = record.get("filter")
    if document is None:
        return patterns
    return Route(patterns, compiled(document))


class Versions:
    """How one destination routed, by offset in its partition, and its latest record.

    An event is routed with the destinations as they were at its stamp: a change that
    returned after the event was published must not apply to it, even if the router
    reads the event later, when its view is already newer. Of an older version only what
    routing reads is kept (from which offset on it routed which patterns), and versions
    that route alike share one entry: a destination whose changes never touched its
    status or patterns keeps one, however often it changed. The id and generation a
    delivery names are the same in every version (a destination deleted and created
    again is a new Versions), so the latest record answers for all of them. The view
    keeps the latest record as the bytes it read and parses it when asked.
    """

    __slots__ = ("_created_from", "_history", "label", "partition", "raw")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.raw = b""
        self.label: tuple[str, str] = ("", "")
        # (offset, routing) pairs, oldest first, flattened into one tuple (small and cheap).
        self._history: tuple[Any, ...] = ()
        # None: the oldest entry began with the create, so nothing routed before it; else
        # the creation bound (the API's stamp at create, `routes_from`) of this partition.
        self._created_from: int | None = None

    def add(self, offset: int, record: dict[str, Any], raw: bytes) -> None:
        """A newer version, read at `offset` as `raw`; the oldest entries beyond
        MAX_VERSIONS are dropped."""
        self.raw = raw
        routing = routing_of(record)
        history = self._history
        if not history:
            created = record.get("last_op") == "create"
            self._created_from = None if created else _created_from(record, self.partition)
        elif history[-1] == routing:
            return  # routes as the entry before it did: that entry stands for it
        history = (*history, offset, routing)
        if len(history) > 2 * MAX_VERSIONS:
            history = history[2:]
            self._created_from = _created_from(record, self.partition)
        self._history = history

    @property
    def routing(self) -> Routing:
        """How the current version routes."""
        routing: Routing = self._history[-1]
        return routing

    def patterns(self) -> set[str]:
        """Every pattern any kept entry subscribes to (for the match index)."""
        history = self._history
        return {p for routing in history[1::2] if routing for p in routing}

    def as_of(self, stamp: dict[int, int]) -> Routing:
        """How the version in force for an event stamped `stamp` routes; None if it took
        no events then, or did not exist yet."""
        history = self._history
        bound = stamp.get(self.partition)
        if bound is None:
            return self.routing
        for i in range(len(history) - 2, -1, -2):
            if history[i] < bound:
                routing: Routing = history[i + 1]
                return routing
        if self._created_from is None:
            return None  # the whole history is here: it did not exist yet
        # History cut short (compaction, or pruning): the creation bound still tells
        # whether it existed when the event was published.
        return history[1] if bound > self._created_from else None


def _created_from(record: dict[str, Any], partition: int) -> int:
    return int((record.get("routes_from") or {}).get(str(partition), -1))


def prefix_of(pattern: str) -> str | None:
    """`task_run.*` → `task_run.`; None for an exact type or `*`."""
    if pattern != "*" and pattern.endswith(".*"):
        return pattern[:-1]
    return None


class MatchIndex:
    """tenant → event type → destination ids, plus `*` and prefix subscribers.

    Lookup cost grows with the number of dot-separated parts of the type and the number
    of matches, never with the number of destinations. A type with one subscriber (most
    of them, at scale) holds the id itself rather than a set of one. The index does not
    remember a destination's patterns: whoever indexed it names them again to remove it.
    """

    def __init__(self) -> None:
        self._exact: dict[tuple[str, str], str | set[str]] = {}

    def put(self, destination_id: str, tenant: str, patterns: Iterable[str]) -> None:
        """Index a destination under these patterns (added to any it is indexed under)."""
        exact = self._exact
        for pattern in patterns:
            key = (tenant, prefix_of(pattern) or pattern)
            ids = exact.get(key)
            if ids is None:
                exact[key] = destination_id
            elif isinstance(ids, str):
                if ids != destination_id:  # two patterns of one destination may share a key
                    exact[key] = {ids, destination_id}
            else:
                ids.add(destination_id)

    def remove(self, destination_id: str, tenant: str, patterns: Iterable[str]) -> None:
        """Stop indexing a destination under these patterns."""
        exact = self._exact
        for pattern in patterns:
            key = (tenant, prefix_of(pattern) or pattern)
            ids = exact.get(key)
            if ids == destination_id:
                del exact[key]
            elif isinstance(ids, set):
                ids.discard(destination_id)
                if len(ids) == 1:
                    exact[key] = ids.pop()
                elif not ids:
                    del exact[key]

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
            if ids is None:
                continue
            if isinstance(ids, str):
                found.add(ids)
            else:
                found |= ids
        return found
