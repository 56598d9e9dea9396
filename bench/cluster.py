"""The orchestrator's own Kafka access: destination change records, fold progress, group lag.

Benchmarks with 100,000 destinations write their change records straight into
`destination-changes` instead of 100,000 API calls (the fold agent does not care who
appended a change; docs/design.md, The data flow): the same records
`api.destinations.Destinations.create` appends, sealed with the stack's key, which the
fold agent folds exactly as it folds the API's. Each destination also gets a `verified`
change, so the worker does not append one on its first delivery (that write would be part
of every figure of the cost scenario otherwise).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from bench.stack import BENCH_SETTINGS, TENANT, Stack
from pipeline import ids
from pipeline.crypto import Sealer
from pipeline.settings import Settings
from pipeline.signing import generate_secret
from pipeline.timeutil import now_iso
from pipeline.topics import (
    ATTEMPTS,
    DELIVERIES,
    DESTINATION_CHANGES,
    DESTINATIONS,
    EVENTS,
    load_specs,
    retry_topic,
)

SEND_CHUNK = 5_000
# Records the fold agent writes to `destinations` per change: a create or verified folds into
# one record; a delete into the deleted marker and then a tombstone.
FOLDED_RECORDS = {"create": 1, "verified": 1, "update": 1, "delete": 2}


@dataclass(frozen=True)
class DestinationSpec:
    """A webhook destination to create: where it points and what it subscribes to."""

    behaviour: str  # ok | fail | slow (the receiver's path)
    group: str
    index: int
    events: tuple[str, ...]
    url: str | None = None  # somewhere else than the receiver (a port nobody listens on)
    destination_id: str | None = None  # chosen (e.g. for its partition); else a new id


class Cluster:
    """A producer, an end-offsets client and an admin client on the bench broker."""

    def __init__(
        self, bootstrap: str, encryption_key: str, tenant: str, receiver_url: str, max_retries: int
    ) -> None:
        self._bootstrap = bootstrap
        self._sealer = Sealer(encryption_key)
        self._tenant = tenant
        self._receiver_url = receiver_url
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        self._offsets = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._folded_expected = 0
        partitions = {s.name: s.partitions for s in load_specs(Settings().topics_file)}
        sinks = [DELIVERIES] + [retry_topic(n) for n in range(1, max_retries + 1)]
        # Herald's consumer groups (app id "herald") and what each consumes.
        self._groups = {
            "herald": [EVENTS, DESTINATION_CHANGES],
            "herald-sinks": sinks,
            "herald-indexer": [EVENTS, DELIVERIES, ATTEMPTS],
        }
        self._partitions = partitions

    @classmethod
    def of(cls, stack: Stack) -> Cluster:
        """The cluster of a bench stack: its broker, key, tenant, receiver and retries."""
        return cls(
            stack.kafka_bootstrap,
            stack.encryption_key,
            TENANT,
            stack.receiver_url,
            int(BENCH_SETTINGS["HERALD_MAX_RETRIES"]),
        )

    async def start(self) -> None:
        """Connect the three clients."""
        await self._producer.start()
        await self._offsets.start()
        await self._admin.start()

    async def stop(self) -> None:
        """Close the three clients."""
        await self._admin.close()
        await self._offsets.stop()
        await self._producer.stop()

    # -- destinations --------------------------------------------------------------------

    def url(self, spec: DestinationSpec) -> str:
        """The receiver URL of a destination (or the URL it was given)."""
        if spec.url is not None:
            return spec.url
        return f"{self._receiver_url}/{spec.behaviour}/{spec.group}/{spec.index}"

    async def create_destinations(
        self, specs: Sequence[DestinationSpec], on_progress: Callable[[int], None] | None = None
    ) -> list[str]:
        """Append a create and a verified change per destination; returns their ids."""
        created: list[str] = []
        for start in range(0, len(specs), SEND_CHUNK):
            futures = []
            for spec in specs[start : start + SEND_CHUNK]:
                destination_id = spec.destination_id or ids.new_id(ids.DESTINATION)
                created.append(destination_id)
                futures.append(await self._change(destination_id, "create", self._fields(spec)))
                futures.append(await self._change(destination_id, "verified"))
            await asyncio.gather(*futures)
            if on_progress is not None:
                on_progress(len(created))
        return created

    async def update_destinations(
        self, destination_ids: Sequence[str], fields: dict[str, object]
    ) -> None:
        """Append an update change per destination setting `fields` (as a PATCH would)."""
        futures = [await self._change(d, "update", fields, seal=False) for d in destination_ids]
        await asyncio.gather(*futures)

    async def delete_destinations(self, destination_ids: Sequence[str]) -> None:
        """Append a delete change per destination."""
        futures = [await self._change(d, "delete") for d in destination_ids]
        await asyncio.gather(*futures)

    def _fields(self, spec: DestinationSpec) -> dict[str, object]:
        return {
            "tenant": self._tenant,
            "name": f"bench {spec.group} {spec.index}",
            "description": None,
            "type": "webhook",
            "events": list(spec.events),
            "metadata": {},
            "rate_limit": None,
            "config": {"url": self.url(spec)},
            "routes_from": {},
        }

    async def _change(
        self,
        destination_id: str,
        op: str,
        fields: dict[str, object] | None = None,
        seal: bool = True,
    ) -> Awaitable[object]:
        """Append one change; `seal` gives the fields new credentials (a create's)."""
        change: dict[str, object] = {"change_id": ids.new_id(ids.CHANGE), "op": op, "at": now_iso()}
        if fields is not None and not seal:
            change["fields"] = fields
        elif fields is not None:
            sealed = self._sealer.seal({"secret": generate_secret()}, destination_id)
            change["fields"] = {**fields, "sealed": sealed}
        self._folded_expected += FOLDED_RECORDS[op]
        future: Awaitable[object] = await self._producer.send(
            DESTINATION_CHANGES,
            orjson.dumps(change),
            key=ids.scoped(self._tenant, destination_id).encode(),
        )
        return future

    async def wait_folded(
        self, timeout_s: float, on_progress: Callable[[int], None] | None = None
    ) -> None:
        """Wait until the fold agent has written every change appended so far.

        The broker started empty, so the `destinations` topic holds exactly the records
        folded from these changes (the worker appends none: destinations are verified
        already and auto-disable is off in the bench).
        """
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            folded = sum((await self.end_offsets(DESTINATIONS)).values())
            if on_progress is not None:
                on_progress(folded)
            if folded >= self._folded_expected:
                return
            if asyncio.get_running_loop().time() >= deadline:
                raise TimeoutError(
                    f"fold wrote {folded} of {self._folded_expected} records in {timeout_s} s"
                )
            await asyncio.sleep(0.25)

    @property
    def folded_expected(self) -> int:
        """Records the fold agent will have written once it caught up."""
        return self._folded_expected

    # -- offsets and lag -----------------------------------------------------------------

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        """The topic's end offsets now."""
        tps = [TopicPartition(topic, p) for p in range(self._partitions[topic])]
        ends: dict[TopicPartition, int] = await self._offsets.end_offsets(tps)
        return ends

    async def lag(self) -> dict[str, int]:
        """Records past each Herald group's committed offsets (from the start if none)."""
        out: dict[str, int] = {}
        for group, topics in self._groups.items():
            committed = await self._admin.list_consumer_group_offsets(group)
            total = 0
            for topic in topics:
                for tp, end in (await self.end_offsets(topic)).items():
                    meta = committed.get(tp)
                    position = meta.offset if meta is not None and meta.offset >= 0 else 0
                    total += max(0, end - position)
            out[group] = total
        return out

    async def committed(self, group: str, topic: str) -> int:
        """Records of `topic` below `group`'s committed offsets, summed over its partitions."""
        offsets = await self._admin.list_consumer_group_offsets(group)
        return sum(m.offset for tp, m in offsets.items() if tp.topic == topic and m.offset > 0)

    async def skip_to_end(self, group: str, topics: Sequence[str]) -> None:
        """Commit `group`'s offsets on `topics` at their ends, so that the group's next
        member starts after everything written so far. Only while the group has no member
        (the broker refuses a commit from outside a live group)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            ends = {
                tp: OffsetAndMetadata(offset, "")
                for topic in topics
                for tp, offset in (await self.end_offsets(topic)).items()
            }
            consumer.assign(list(ends))  # aiokafka commits only assigned partitions
            await consumer.commit(ends)
        finally:
            await consumer.stop()

    async def produce(
        self,
        topic: str,
        records: Sequence[tuple[bytes, bytes]],
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Write (key, value) records to `topic`, acknowledged (acks=all) when this returns."""
        for start in range(0, len(records), SEND_CHUNK):
            futures = [
                await self._producer.send(topic, value, key=key)
                for key, value in records[start : start + SEND_CHUNK]
            ]
            await asyncio.gather(*futures)
            if on_progress is not None:
                on_progress(start + len(futures))

    async def wait_idle(self, timeout_s: float) -> dict[str, int]:
        """Wait until every Herald group has committed everything (or the deadline)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            lag = await self.lag()
            if not any(lag.values()) or asyncio.get_running_loop().time() >= deadline:
                return lag
            await asyncio.sleep(0.5)
