"""The delivery runner: consumes `deliveries` and the retry tiers, pushes through sinks.

The data flows one way:

    transport (this module: fetch, hold until due, offset bookkeeping, commit)
      → policy.before_attempt (attempt now, cancel, skip along the schedule, put off)
      → lanes (the destination's adaptive slots, its rate token, a global slot)
      → sink (one attempt)
      → policy.after_attempt (delivered; retry at T, or dead-letter; disable?)
      → outcomes (the recorder writes it; only then is the offset finished)

A plain aiokafka consumer in a group (not a Faust agent with concurrency > 1, which can
commit past a message still in flight). Each partition's committed offset stays below
its lowest unfinished delivery, and a delivery is finished only once what became of it is
acknowledged by the broker; its slots are freed as soon as the sink has answered. A
partition with too many unfinished is paused, and so is every partition while the lanes
hold `sink_max_buffered` deliveries (memory, not a destination's burst, is what pauses
fetching). A retry-tier record that is not yet due pauses its partition until it is
(pause/resume, never a sleep in the consume loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, deque

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord

from pipeline import metrics
from pipeline.attempts import AttemptRecorder
from pipeline.dispatch import Dispatcher
from pipeline.offsets import PartitionTracker
from pipeline.publishers import PublisherCache
from pipeline.settings import Settings
from pipeline.supervision import GiveUp, SupervisedLoop
from pipeline.topics import DELIVERIES, retry_topic
from pipeline.view import DestinationView

log = logging.getLogger(__name__)

DUE_HEADER = "herald-due-ms"
COMMIT_INTERVAL_S = 0.5
FETCH_MAX_WAIT_MS = 500
# How long one turn of the consume loop waits for records: the loop commits between turns.
POLL_TIMEOUT_MS = int(COMMIT_INTERVAL_S * 1000)


def _due_ms(record: ConsumerRecord[bytes, bytes]) -> int:
    for name, value in record.headers or ():
        if name == DUE_HEADER:
            return int(value)
    return 0


def sink_group_id(settings: Settings) -> str:
    """The consumer group of every delivering process's runner (the metrics sampler, in
    the router's process, reads its lag too)."""
    return f"{settings.app_id}-sinks"


def sink_topics(settings: Settings) -> list[str]:
    """The topics the runner consumes: `deliveries` and every retry tier."""
    return [DELIVERIES] + [retry_topic(n) for n in range(1, settings.max_retries + 1)]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: DeliveryRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._runner.commit(only=set(revoked))
        self._runner.forget(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("delivery runner assigned %d partitions", len(assigned))


class DeliveryRunner:
    """Owns the sink consumer group of one worker process."""

    def __init__(
        self,
        settings: Settings,
        view: DestinationView,
        recorder: AttemptRecorder,
        publishers: PublisherCache,
    ) -> None:
        self._settings = settings
        self._topics = sink_topics(settings)
        # Retry topic → tier label, for the backlog gauges.
        self._tier_labels = {
            retry_topic(n): metrics.tier_label(n) for n in range(1, settings.max_retries + 1)
        }
        self._consumer: AIOKafkaConsumer | None = None
        bound = settings.sink_max_unfinished_per_partition
        self._trackers: dict[TopicPartition, PartitionTracker] = defaultdict(
            lambda: PartitionTracker(bound)
        )
        # The offset last committed per partition: an unchanged one is not sent again.
        self._committed: dict[TopicPartition, int] = {}
        self._held: dict[TopicPartition, deque[ConsumerRecord[bytes, bytes]]] = {}
        self._wakeups: dict[TopicPartition, asyncio.TimerHandle] = {}
        self._dispatcher = Dispatcher(settings, view, recorder, publishers, self._finished)
        self._full = False  # the lanes hold sink_max_buffered: fetching is paused
        self.loop: SupervisedLoop | None = None

    @property
    def group_id(self) -> str:
        """The consumer group of every worker's runner."""
        return sink_group_id(self._settings)

    @property
    def topics(self) -> list[str]:
        """The topics the runner consumes: `deliveries` and every retry tier."""
        return list(self._topics)

    async def start(self, give_up: GiveUp) -> None:
        """Join the consumer group and start consuming; a consume loop that fails is not
        restarted (what it had fetched is not tracked): `give_up` stops the worker, and
        offsets below the lowest unfinished delivery are committed on the way out."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            group_id=self.group_id,
            client_id=f"{self._settings.app_id}-sinks",
            enable_auto_commit=False,
            session_timeout_ms=int(self._settings.consumer_session_timeout_s * 1000),
            auto_offset_reset="earliest",
            max_poll_records=1000,
            # A fetch returns as soon as any partition has a record, so the wait costs a new
            # delivery nothing; it bounds how often an idle runner asks (twice a second, not
            # twenty times) and how long a retry tier resumed at its due time waits for the
            # fetch already in flight.
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        self._consumer.subscribe(self._topics, listener=_Rebalance(self))
        await self._consumer.start()
        self.loop = SupervisedLoop("delivery", self._consume, give_up, max_restarts=0)
        self.loop.start()

    async def stop(self) -> None:
        """Stop fetching, let in-flight deliveries finish briefly, commit, leave the group."""
        if self.loop is not None:
            await self.loop.stop()
        self._dispatcher.stop()
        if self._dispatcher.tasks:
            timeout_s = self._settings.delivery_timeout_s + 1
            await asyncio.wait(self._dispatcher.tasks, timeout=timeout_s)
        for handle in self._wakeups.values():
            handle.cancel()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self.commit()
            await self._consumer.stop()

    # -- transport: fetch, hold until due, pause --------------------------------------------

    async def _consume(self) -> None:
        assert self._consumer is not None and self.loop is not None
        last_commit = time.monotonic()
        while True:
            self.loop.beat()
            if self._dispatcher.failure is not None:
                raise self._dispatcher.failure
            batches = await self._consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=500)
            for tp, records in batches.items():
                tracker = self._trackers[tp]
                for record in records:
                    tracker.add(record.offset)
                    if tp in self._held or _due_ms(record) > time.time() * 1000:
                        self._hold(tp, record)
                    else:
                        self._dispatcher.arrived(tp, record)
                if tracker.stall():
                    self._stall(tp, tracker)
            self._bound_memory()
            if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                await self.commit()
                last_commit = time.monotonic()

    def _hold(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        """Keep a not-yet-due record and pause its partition until the head is due."""
        assert self._consumer is not None
        queue = self._held.setdefault(tp, deque())
        queue.append(record)
        if len(queue) == 1:
            self._consumer.pause(tp)
            self._schedule_wakeup(tp, _due_ms(record))

    def _schedule_wakeup(self, tp: TopicPartition, due_ms: int) -> None:
        delay_s = max(0.0, due_ms / 1000 - time.time())
        self._wakeups[tp] = asyncio.get_running_loop().call_later(delay_s, self._release, tp)

    def _release(self, tp: TopicPartition) -> None:
        """Let the held records that are due go; resume the partition when none are left."""
        self._wakeups.pop(tp, None)
        queue = self._held.get(tp)
        if queue is None:
            return
        now_ms = time.time() * 1000
        while queue and _due_ms(queue[0]) <= now_ms:
            self._dispatcher.arrived(tp, queue.popleft())
        if queue:
            self._schedule_wakeup(tp, _due_ms(queue[0]))
            return
        del self._held[tp]
        self._resume(tp)

    def _resume(self, tp: TopicPartition) -> None:
        """Fetch from the partition again, unless it still waits for a held record, for its
        unfinished offsets to drain or for the lanes to empty."""
        assert self._consumer is not None
        tracker = self._trackers.get(tp)
        if self._full or tp in self._held or (tracker is not None and tracker.stalled):
            return
        if tp in self._consumer.assignment():
            self._consumer.resume(tp)

    def _stall(self, tp: TopicPartition, tracker: PartitionTracker) -> None:
        """Too many offsets unfinished behind the lowest: fetch no more until half are done."""
        assert self._consumer is not None
        self._consumer.pause(tp)
        log.error(
            "delivery partition paused: %d offsets unfinished behind offset %s",
            tracker.in_flight,
            tracker.committable(),
            extra={"topic": tp.topic, "partition": tp.partition},
        )

    def _bound_memory(self) -> None:
        """Pause every partition while the lanes hold `sink_max_buffered` deliveries; resume
        them once half have gone."""
        assert self._consumer is not None
        bound = self._settings.sink_max_buffered
        if not self._full and bound and self._dispatcher.queued >= bound:
            self._full = True
            self._consumer.pause(*self._consumer.assignment())
        elif self._full and self._dispatcher.queued <= bound // 2:
            self._full = False
            for tp in self._consumer.assignment():
                self._resume(tp)

    def _finished(self, tp: TopicPartition, offset: int) -> None:
        tracker = self._trackers.get(tp)  # None: the partition was revoked meanwhile
        if tracker is not None and tracker.done(offset):
            log.info("delivery partition resumed", extra={"topic": tp.topic})
            self._resume(tp)

    # -- metrics -------------------------------------------------------------------------

    def observe_backlog(self) -> None:
        """Set the retry backlog gauges from the records held until due, and the open
        circuits gauge (called by a sampler)."""
        held = dict.fromkeys(self._tier_labels.values(), 0)
        oldest_due_age_s = dict.fromkeys(self._tier_labels.values(), 0.0)
        now_ms = time.time() * 1000
        for tp, queue in self._held.items():
            tier = self._tier_labels.get(tp.topic)
            if tier is None or not queue:
                continue
            held[tier] += len(queue)
            # Due times rise within a partition: the head is the partition's oldest due.
            overdue_s = max(0.0, (now_ms - _due_ms(queue[0])) / 1000)
            oldest_due_age_s[tier] = max(oldest_due_age_s[tier], overdue_s)
        metrics.observe_retry_backlog(held, oldest_due_age_s)
        metrics.DELIVERY_PARTITIONS_STALLED.set(sum(t.stalled for t in self._trackers.values()))
        self._dispatcher.observe()

    # -- offsets -------------------------------------------------------------------------

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit, per partition, the offset below the lowest unfinished delivery, where it
        moved since this runner last committed it (an idle runner sends nothing)."""
        if self._consumer is None:
            return
        assignment = self._consumer.assignment()
        offsets = {}
        for tp, tracker in self._trackers.items():
            if (only is None or tp in only) and tp in assignment:
                offset = tracker.committable()
                if offset is not None and self._committed.get(tp) != offset:
                    offsets[tp] = offset
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
            self._committed.update(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance took partitions away meanwhile: their new owner starts from the
            # last committed offsets (at-least-once); this worker carries on with the rest.
            log.warning("commit refused after a rebalance (%s)", type(exc).__name__)

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Drop the state of partitions this worker no longer owns."""
        self._dispatcher.forget(partitions)
        for tp in partitions:
            self._trackers.pop(tp, None)
            self._committed.pop(tp, None)
            self._held.pop(tp, None)
            handle = self._wakeups.pop(tp, None)
            if handle is not None:
                handle.cancel()
