"""A live, in-memory view of the compacted `destinations` topic, every partition.

The API and every worker keep one. It reads the topic from the start with a plain
consumer (no group), indexes records for routing, and lets callers wait for a change of
their own (by change id) or for the topic offsets an event was stamped with. Destination
ids are scoped per tenant: records are held, and looked up, by (tenant, id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.destinations import ROUTABLE, MatchIndex, Versions, subscribed
from pipeline.ids import scoped, unscoped
from pipeline.stamps import SharedLookup
from pipeline.topics import DESTINATIONS

log = logging.getLogger(__name__)

Offsets = dict[int, int]


class ViewTimeout(Exception):
    """The view did not reach the wanted state in time."""


class DestinationView:
    """Current destination records by (tenant, id), kept up to date from `destinations`."""

    def __init__(self, bootstrap: str, topic: str = DESTINATIONS) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        # End offsets are asked on a connection of their own: a broker answers a connection's
        # requests in order, so behind the follower's long-poll fetch they would wait.
        self._offsets: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._versions: dict[str, Versions] = {}
        self._index = MatchIndex()
        self._positions: Offsets = {}
        self._progress = asyncio.Event()
        self._change_waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._stamps = SharedLookup(self.end_offsets)
        self.ready = asyncio.Event()

    async def start(self) -> None:
        """Connect, assign every partition from the beginning and start following."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="herald-destination-view",
        )
        await consumer.start()
        self._consumer = consumer
        self._offsets = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id="herald-destination-offsets",
        )
        await self._offsets.start()
        partitions = None
        for _ in range(100):
            partitions = consumer.partitions_for_topic(self._topic)
            if partitions:
                break
            await consumer._client.force_metadata_update()
        if not partitions:
            raise RuntimeError(f"topic {self._topic!r} does not exist: run `herald topics apply`")
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        initial = await self.end_offsets()
        self._positions = {tp.partition: 0 for tp in tps}
        self._task = asyncio.create_task(self._follow(initial), name="destination-view")

    async def stop(self) -> None:
        """Stop following and close the consumer."""
        self._stamps.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        if self._offsets is not None:
            await self._offsets.stop()

    # -- reading -------------------------------------------------------------------------

    def get(self, tenant: str, destination_id: str) -> dict[str, Any] | None:
        """The tenant's current record of that id, or None if unknown or deleted."""
        versions = self._versions.get(scoped(tenant, destination_id))
        return versions.latest if versions is not None else None

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

    def all(self) -> list[dict[str, Any]]:
        """Every live record."""
        return [v.latest for v in self._versions.values()]

    def match(
        self, tenant: str, event_type: str, stamp: Offsets | None = None
    ) -> list[dict[str, Any]]:
        """Routable (active or pending) destinations of `tenant` subscribed to `event_type`,
        as they were at `stamp` (the event's publish time) if given, else as they are now."""
        found = []
        for key in self._index.match(tenant, event_type):
            versions = self._versions.get(key)
            if versions is None:
                continue
            record = versions.as_of(stamp) if stamp else versions.latest
            if (
                record is not None
                and record["status"] in ROUTABLE
                and subscribed(record.get("events") or [], event_type)
            ):
                found.append(record)
        return found

    @property
    def positions(self) -> Offsets:
        """Next offset to read, per partition."""
        return dict(self._positions)

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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._reached(offsets):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ViewTimeout(f"view did not reach {offsets} within {timeout_s}s")
            progress = self._progress
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), remaining)

    def _reached(self, offsets: Offsets) -> bool:
        positions = self._positions
        return all(positions.get(int(p), 0) >= o for p, o in offsets.items())

    async def sync(self, timeout_s: float) -> None:
        """Catch up with everything written before this call (a read barrier).

        Another process's change returned to its caller only once it was in the topic, so
        after this every such change is visible here too.
        """
        await self.wait_offsets(await self.stamp(), timeout_s)

    async def end_offsets(self) -> Offsets:
        """The topic's current end offsets, as the broker says now."""
        assert self._consumer is not None and self._offsets is not None
        tps = [
            TopicPartition(self._topic, p)
            for p in self._consumer.partitions_for_topic(self._topic) or ()
        ]
        ends = await self._offsets.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}

    async def stamp(self) -> Offsets:
        """End offsets from a look-up sent after this call began (pipeline/stamps.py): every
        change that returned before then is below them. Concurrent callers share look-ups,
        one in flight at a time."""
        return await self._stamps.get()

    # -- following -----------------------------------------------------------------------

    async def _follow(self, initial: Offsets) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            except Exception:
                log.exception("destination view fetch failed; retrying")
                await asyncio.sleep(1)
                continue
            for messages in batches.values():
                for message in messages:
                    self._apply(message.key, message.value, message.partition, message.offset)
            for tp in consumer.assignment():
                self._positions[tp.partition] = await consumer.position(tp)
            progress, self._progress = self._progress, asyncio.Event()
            progress.set()
            if not self.ready.is_set() and self._reached(initial):
                self.ready.set()
                log.info("destination view ready: %d destinations", len(self._versions))

    def _apply(self, key: bytes | None, value: bytes | None, partition: int, offset: int) -> None:
        if key is None:
            return
        record = orjson.loads(value) if value is not None else None
        scoped_key = _scoped_key(key.decode(), record)
        if scoped_key is None:
            pass
        elif record is None or record.get("deleted"):
            # Deleted: gone at once, for events routed from now on whatever their stamp
            # (queued deliveries to it are dropped by the sinks too).
            self._versions.pop(scoped_key, None)
            self._index.remove(scoped_key)
        else:
            versions = self._versions.get(scoped_key)
            if versions is None or versions.partition != partition:
                versions = self._versions[scoped_key] = Versions(partition)
            versions.add(offset, record)
            self._index.put(scoped_key, record["tenant"], versions.patterns())
        if record is not None:
            waiter = self._change_waiters.get(record.get("change_id", ""))
            if waiter is not None and not waiter.done():
                waiter.set_result(record)


def _scoped_key(key: str, record: dict[str, Any] | None) -> str | None:
    """`tenant/id`; a record keyed by its bare id (written before ids were scoped) is held
    under its own tenant, and a bare tombstone names nothing left to forget."""
    tenant, _ = unscoped(key)
    if tenant is not None:
        return key
    if record is not None and record.get("tenant") is not None:
        return scoped(str(record["tenant"]), key)
    return None
