"""A live, in-memory view of the compacted `destinations` topic, every partition.

The API and every worker keep one. It reads the topic from the start with a plain
consumer (no group), indexes records for routing, and lets callers wait for a change of
their own (by change id) or for the topic offsets an event was stamped with. Destination
ids are scoped per tenant: records are held, and looked up, by (tenant, id).

Memory: per destination the view holds the latest record as the bytes it read (parsed
when asked; the most recently used are kept parsed) and a compact routing history
(pipeline.destinations.Versions). In the worker the bytes are the very object the fold
agent's table holds (`share_with`), so a record is held once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from pipeline.destinations import MatchIndex, Route, Versions, subscribed
from pipeline.filters import Tally
from pipeline.follow import Offsets, TopicFollower
from pipeline.ids import scoped, unscoped
from pipeline.stamps import SharedLookup
from pipeline.topics import DESTINATIONS

log = logging.getLogger(__name__)

# End-offset look-ups for stamps in flight at once (pipeline/stamps.py): one would make every
# publish also wait for the rest of the look-up before its own; a few keep that wait short
# and the broker's ListOffsets requests bounded.
STAMP_LOOKUPS_IN_FLIGHT = 4

# How long one turn of the follow loop waits for records. A record ends the wait at once;
# the timeout only paces the idle turns (and how soon a position that moved without a
# record, past compacted-away offsets, is seen).
FOLLOW_POLL_MS = 1000
# How long the broker may hold the view's fetch when there is nothing new: a change ends it
# at once, so this only sets how often an idle view asks.
FOLLOW_FETCH_WAIT_MS = 2000

# Parsed records kept for reads (dispatch and the router read the same few destinations
# over and over); every other record is held as bytes only.
PARSED_RECORDS = 1024


class ViewTimeout(Exception):
    """The view did not reach the wanted state in time."""


class DestinationView:
    """Current destination records by (tenant, id), kept up to date from `destinations`."""

    def __init__(self, bootstrap: str, topic: str = DESTINATIONS) -> None:
        self._follower = TopicFollower(
            bootstrap, topic, "herald-destination-view", FOLLOW_FETCH_WAIT_MS, FOLLOW_POLL_MS
        )
        self._versions: dict[str, Versions] = {}
        self._parsed: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._counts: dict[tuple[str, str], int] = {}
        self._labels: dict[tuple[str, str], tuple[str, str]] = {}
        self._shared: Mapping[bytes, bytes | None] | None = None
        self._index = MatchIndex()
        self._change_waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._stamps = SharedLookup(self.end_offsets, STAMP_LOOKUPS_IN_FLIGHT)
        self.ready = self._follower.ready

    async def start(self) -> None:
        """Read the topic from the start and keep following it."""
        await self._follower.start(self._fold, self._on_ready)

    async def stop(self) -> None:
        """Stop following and close the consumers."""
        self._stamps.close()
        await self._follower.stop()

    # -- reading -------------------------------------------------------------------------

    def get(self, tenant: str, destination_id: str) -> dict[str, Any] | None:
        """The tenant's current record of that id, or None if unknown or deleted.

        The record is shared with other readers: never change it."""
        return self._record(scoped(tenant, destination_id))

    def _record(self, key: str) -> dict[str, Any] | None:
        parsed = self._parsed
        cached = parsed.get(key)
        if cached is not None:
            parsed.move_to_end(key)
            return cached
        versions = self._versions.get(key)
        if versions is None:
            return None
        record: dict[str, Any] = orjson.loads(versions.raw)
        self._keep_parsed(key, record)
        return record

    def _keep_parsed(self, key: str, record: dict[str, Any]) -> None:
        parsed = self._parsed
        parsed[key] = record
        parsed.move_to_end(key)
        if len(parsed) > PARSED_RECORDS:
            parsed.popitem(last=False)

    async def generation_of(
        self, tenant: str, destination_id: str, generation: str | None, timeout_s: float
    ) -> dict[str, Any] | None:
        """The tenant's record of that id if it is still of `generation`, else None.

        Before answering None the view catches up with the topic (best effort): whoever
        named the generation may have read a create that this view has not read yet."""
        for catch_up in (True, False):
            record = self.get(tenant, destination_id)
            if record is not None and record.get("generation") == generation:
                return record
            if catch_up:
                with contextlib.suppress(ViewTimeout, KafkaError):
                    await self.sync(timeout_s)
        return None

    def all(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every live record, or every one of `tenant`'s (parsed on each call: for listing,
        not for a hot path)."""
        return [
            orjson.loads(versions.raw)
            for key, versions in self._versions.items()
            if tenant is None or unscoped(key)[0] == tenant
        ]

    def counts(self) -> dict[tuple[str, str], int]:
        """How many live destinations there are of each (status, type)."""
        return {label: count for label, count in self._counts.items() if count}

    def match(
        self,
        tenant: str,
        event_type: str,
        stamp: Offsets | None = None,
        event: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Routable (active or pending) destinations of `tenant` subscribed to `event_type`,
        as they were at `stamp` (the event's publish time) if given, else as they are now;
        with `event` (the router's parsed event), less those whose content filter, as it was
        at the stamp, leaves the event out (pipeline/filters.py).

        Which destinations match follows the stamp; the records returned are the current
        ones (what a delivery names of them, id and generation, never changes)."""
        found = []
        tally: Tally | None = None
        for key in self._index.match(tenant, event_type):
            versions = self._versions.get(key)
            if versions is None:
                continue
            # The id and generation a delivery names are the same in every version: the
            # latest record stands for the version in force at the stamp.
            routing = versions.as_of(stamp) if stamp else versions.routing
            if routing is None or not subscribed(routing, event_type):
                continue
            if event is not None and type(routing) is Route:
                tally = tally or Tally()
                if not tally.passes(routing.filter, event):
                    continue
            record = self._record(key)
            if record is not None:
                found.append(record)
        if tally is not None:
            tally.flush()
        return found

    @property
    def positions(self) -> Offsets:
        """Next offset to read, per partition."""
        return dict(self._follower.positions)

    # -- waiting -------------------------------------------------------------------------

    def expect_change(self, change_id: str) -> asyncio.Future[dict[str, Any]]:
        """A future resolved with the folded record of `change_id`; call before writing."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._change_waiters[change_id] = future
        return future

    async def wait_change(
        self, future: asyncio.Future[dict[str, Any]], change_id: str, timeout_s: float
    ) -> dict[str, Any]:
        """Wait for a change registered with `expect_change`."""
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError as exc:
            raise ViewTimeout(f"change {change_id} not folded within {timeout_s}s") from exc
        finally:
            self._change_waiters.pop(change_id, None)

    async def wait_offsets(self, offsets: Offsets, timeout_s: float) -> None:
        """Wait until the view has read up to `offsets` (partition → next offset)."""
        if not await self._follower.wait_for(offsets, timeout_s):
            raise ViewTimeout(f"view did not reach {offsets} within {timeout_s}s")

    async def sync(self, timeout_s: float) -> None:
        """Catch up with everything written before this call (a read barrier).

        Another process's change returned to its caller only once it was in the topic, so
        after this every such change is visible here too.
        """
        await self.wait_offsets(await self.stamp(), timeout_s)

    async def end_offsets(self) -> Offsets:
        """The topic's current end offsets, as the broker says now."""
        return await self._follower.end_offsets()

    async def stamp(self) -> Offsets:
        """End offsets from a look-up sent after this call began (pipeline/stamps.py): every
        change that returned before then is below them. Concurrent callers share look-ups,
        one in flight at a time."""
        return await self._stamps.get()

    # -- following -----------------------------------------------------------------------

    def _fold(self, message: ConsumerRecord) -> None:
        self._apply(message.key, message.value, message.partition, message.offset)

    def _on_ready(self) -> None:
        log.info("destination view ready: %d destinations", len(self._versions))

    def share_with(self, table: Mapping[bytes, bytes | None]) -> None:
        """Hold a record as the very bytes object `table` (the fold agent's table, keyed
        like the topic) holds for it whenever they are equal, so that the worker keeps one
        copy. The fold agent calls this when it starts; `adopt_shared` covers what the
        view read before the table had it."""
        self._shared = table

    def adopt_shared(self) -> int:
        """Take the table's object for every record equal to it; how many were taken.

        The fold agent calls this once its table is recovered (after each rebalance):
        records the view read before the table recovered them were held twice."""
        table = self._shared
        if table is None:
            return 0
        adopted = 0
        for key, raw in list(table.items()):
            versions = self._versions.get(_scoped_key(key.decode(), None) or "")
            if versions is not None and versions.raw is not raw and versions.raw == raw:
                versions.raw = raw
                adopted += 1
        return adopted

    def _apply(self, key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
        if key is None:
            return
        record = orjson.loads(value) if value is not None else None
        scoped_key = _scoped_key(key.decode(), record)
        if scoped_key is None:
            pass
        elif value is None or record is None or record.get("deleted"):
            # Deleted: gone at once, for events routed from now on whatever their stamp
            # (queued deliveries to it are dropped by the sinks too).
            self._forget(scoped_key)
        else:
            self._hold(scoped_key, self._shared_bytes(key, value), record, partition, offset)
        if record is not None:
            waiter = self._change_waiters.get(record.get("change_id", ""))
            if waiter is not None and not waiter.done():
                waiter.set_result(record)

    def _shared_bytes(self, key: bytes, value: bytes) -> bytes:
        twin = self._shared.get(key) if self._shared is not None else None
        return twin if twin is not None and twin == value else value

    def _hold(
        self, key: str, raw: bytes, record: dict[str, Any], partition: int, offset: int
    ) -> None:
        versions = self._versions.get(key)
        if versions is not None:
            self._count(versions.label, -1)
        indexed = versions.patterns() if versions is not None else set()
        if versions is None or versions.partition != partition:
            versions = self._versions[key] = Versions(partition)
        versions.add(offset, record, raw)
        versions.label = self._label(record)
        self._count(versions.label, 1)
        patterns = versions.patterns()
        if patterns != indexed:
            tenant = _tenant_of(key)
            self._index.remove(key, tenant, indexed)
            self._index.put(key, tenant, patterns)
        if key in self._parsed:
            self._keep_parsed(key, record)

    def _forget(self, key: str) -> None:
        versions = self._versions.pop(key, None)
        if versions is None:
            return
        self._count(versions.label, -1)
        self._parsed.pop(key, None)
        self._index.remove(key, _tenant_of(key), versions.patterns())

    def _label(self, record: dict[str, Any]) -> tuple[str, str]:
        label = (str(record.get("status")), str(record.get("type")))
        return self._labels.setdefault(label, label)

    def _count(self, label: tuple[str, str], delta: int) -> None:
        self._counts[label] = self._counts.get(label, 0) + delta


def _tenant_of(key: str) -> str:
    """The tenant of a held record's `tenant/id` key (interned: there are few)."""
    return sys.intern(unscoped(key)[0] or "")


def _scoped_key(key: str, record: dict[str, Any] | None) -> str | None:
    """`tenant/id`; a record keyed by its bare id (written before ids were scoped) is held
    under its own tenant, and a bare tombstone names nothing left to forget."""
    tenant, _ = unscoped(key)
    if tenant is not None:
        return key
    if record is not None and record.get("tenant") is not None:
        return scoped(str(record["tenant"]), key)
    return None
