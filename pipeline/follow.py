"""Following a whole topic from its start: what every view of a folded topic shares.

The destination view (pipeline/view.py, topic `destinations`) and the tenant view
(api/tenant_view.py, topic `tenant-changes`) each read every partition of their topic from
the beginning and then keep following it, handing each record to their own fold. A
`TopicFollower` owns that: the two consumers, where the follower has read to, and waiting
for it to pass given offsets (a read barrier, or a writer waiting for its own change).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

log = logging.getLogger(__name__)

FOLLOW_MAX_RECORDS = 5000

Offsets = dict[int, int]
Fold = Callable[[ConsumerRecord], None]


class TopicFollower:
    """Reads one topic from its start and keeps following it; its owner folds each record."""

    def __init__(
        self, bootstrap: str, topic: str, client_id: str, fetch_max_wait_ms: int, poll_ms: int
    ) -> None:
        """`fetch_max_wait_ms`: how long the broker may hold a fetch when there is nothing
        new (a record ends it at once); `poll_ms`: how long one turn of the follow loop
        waits, which paces idle turns and how soon a position that moved past
        compacted-away offsets is seen."""
        self._bootstrap = bootstrap
        self._topic = topic
        self._client_id = client_id
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._poll_ms = poll_ms
        self._consumer: AIOKafkaConsumer | None = None
        # End offsets are asked on a connection of their own: a broker answers a connection's
        # requests in order, so behind the follower's long-poll fetch they would wait.
        self._offsets: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()
        self.positions: Offsets = {}  # partition → next offset to read
        self.ready = asyncio.Event()  # set once the topic's end at start-up was read

    async def start(self, fold: Fold, on_ready: Callable[[], None]) -> None:
        """Connect, assign every partition from the beginning and start following; `fold`
        gets each record in partition order, `on_ready` is called once when the end the
        topic had at start-up has been read."""
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=self._client_id,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )
        await consumer.start()
        self._offsets = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{self._client_id}-offsets",
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
        self._partitions = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)
        self.positions = {tp.partition: 0 for tp in self._partitions}
        initial = await self.end_offsets()
        self._task = asyncio.create_task(
            self._follow(initial, fold, on_ready), name=self._client_id
        )

    async def stop(self) -> None:
        """Stop following and close both consumers."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for consumer in (self._consumer, self._offsets):
            if consumer is not None:
                await consumer.stop()

    async def end_offsets(self) -> Offsets:
        """The topic's end offsets, as the broker says now."""
        assert self._offsets is not None
        ends = await self._offsets.end_offsets(self._partitions)
        return {tp.partition: offset for tp, offset in ends.items()}

    def reached(self, offsets: Offsets) -> bool:
        """True once everything below `offsets` (partition → offset) has been read."""
        positions = self.positions
        return all(positions.get(int(p), 0) >= o for p, o in offsets.items())

    async def wait_for(self, offsets: Offsets, timeout_s: float) -> bool:
        """Wait until `reached(offsets)`; False if `timeout_s` passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.reached(offsets):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            progress = self._progress
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), remaining)
        return True

    async def _follow(self, initial: Offsets, fold: Fold, on_ready: Callable[[], None]) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while True:
            try:
                batches = await consumer.getmany(
                    timeout_ms=self._poll_ms, max_records=FOLLOW_MAX_RECORDS
                )
                for messages in batches.values():
                    for message in messages:
                        fold(message)
                for tp in consumer.assignment():
                    self.positions[tp.partition] = await consumer.position(tp)
            except Exception:
                log.exception("%s: fetch failed; retrying", self._client_id)
                await asyncio.sleep(1)
                continue
            progress, self._progress = self._progress, asyncio.Event()
            progress.set()
            if not self.ready.is_set() and self.reached(initial):
                self.ready.set()
                on_ready()
