"""The delivery runner: consumes `deliveries` and the retry tiers, pushes through sinks.

A plain aiokafka consumer in a group (not a Faust agent with concurrency > 1, which can
commit past a message still in flight). Many deliveries run at once per partition, at most
`sink_max_in_flight_per_destination` per destination, paced to the destination's
`rate_limit` if it has one, and not at all while its circuit is open (deferred to a retry
tier without counting an attempt) nor beyond `sink_max_queued_per_destination`
outstanding (put off the same way): pipeline/admission.py decides. Each
partition's committed offset stays below its lowest unfinished delivery, every delivery
finishes (`_run_one` says how), and a partition with too many unfinished is paused. A
retry-tier record that is not yet due pauses its partition until it is (pause/resume, never
a sleep in the consume loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, deque
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord

from pipeline import metrics
from pipeline.admission import Admission
from pipeline.attempts import AttemptRecorder, RecorderUnavailable
from pipeline.circuit import Outcome
from pipeline.ids import ref_of_delivery
from pipeline.offsets import PartitionTracker
from pipeline.outcomes import Outcomes, unexpected
from pipeline.publishers import PublisherCache
from pipeline.retry import Schedule
from pipeline.settings import Settings
from pipeline.sinks.base import DeliveryError, PermanentError
from pipeline.supervision import GiveUp, SupervisedLoop
from pipeline.topics import DELIVERIES, retry_topic
from pipeline.view import DestinationView

log = logging.getLogger(__name__)

DUE_HEADER = "herald-due-ms"
COMMIT_INTERVAL_S = 0.5


def _due_ms(record: ConsumerRecord[bytes, bytes]) -> int:
    for name, value in record.headers or ():
        if name == DUE_HEADER:
            return int(value)
    return 0


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
        self._view = view
        self._publishers = publishers
        self._schedule = Schedule(settings.retry_base_delay_s, settings.max_retries)
        self._topics = [DELIVERIES] + [retry_topic(n) for n in range(1, settings.max_retries + 1)]
        # Retry topic → tier label, for the backlog gauges.
        self._tier_labels = {
            retry_topic(n): metrics.tier_label(n) for n in range(1, settings.max_retries + 1)
        }
        self._consumer: AIOKafkaConsumer | None = None
        bound = settings.sink_max_unfinished_per_partition
        self._trackers: dict[TopicPartition, PartitionTracker] = defaultdict(
            lambda: PartitionTracker(bound)
        )
        self._held: dict[TopicPartition, deque[ConsumerRecord[bytes, bytes]]] = {}
        self._wakeups: dict[TopicPartition, asyncio.TimerHandle] = {}
        self._slots = asyncio.Semaphore(settings.sink_max_in_flight)
        # Per destination ref (tenant, id, generation): a recreated id starts fresh.
        self._per_destination: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(settings.sink_max_in_flight_per_destination)
        )
        self._admission = Admission(settings, self._schedule)
        disable_after = settings.auto_disable_after_dead_letters
        self._outcomes = Outcomes(recorder, self._schedule, disable_after)
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: RecorderUnavailable | None = None  # set: the worker must stop
        self.loop: SupervisedLoop | None = None

    @property
    def group_id(self) -> str:
        """The consumer group of every worker's runner."""
        return f"{self._settings.app_id}-sinks"

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
            fetch_max_wait_ms=50,
        )
        self._consumer.subscribe(self._topics, listener=_Rebalance(self))
        await self._consumer.start()
        self.loop = SupervisedLoop("delivery", self._consume, give_up, max_restarts=0)
        self.loop.start()

    async def stop(self) -> None:
        """Stop fetching, let in-flight deliveries finish briefly, commit, leave the group."""
        if self.loop is not None:
            await self.loop.stop()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self._settings.delivery_timeout_s + 1)
        for handle in self._wakeups.values():
            handle.cancel()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self.commit()
            await self._consumer.stop()

    # -- the consume loop ----------------------------------------------------------------

    async def _consume(self) -> None:
        assert self._consumer is not None and self.loop is not None
        last_commit = time.monotonic()
        while True:
            self.loop.beat()
            if self._failure is not None:
                raise self._failure
            batches = await self._consumer.getmany(timeout_ms=100, max_records=500)
            for tp, records in batches.items():
                tracker = self._trackers[tp]
                for record in records:
                    tracker.add(record.offset)
                    if tp in self._held or _due_ms(record) > time.time() * 1000:
                        self._hold(tp, record)
                    else:
                        await self._dispatch(tp, record)
                if tracker.stall():
                    self._stall(tp, tracker)
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
        loop = asyncio.get_running_loop()
        self._wakeups[tp] = loop.call_later(delay_s, lambda: loop.create_task(self._release(tp)))

    async def _release(self, tp: TopicPartition) -> None:
        """Dispatch the held records that are due; resume the partition when none are left."""
        self._wakeups.pop(tp, None)
        queue = self._held.get(tp)
        if queue is None:
            return
        now_ms = time.time() * 1000
        while queue and _due_ms(queue[0]) <= now_ms:
            await self._dispatch(tp, queue.popleft())
        if queue:
            self._schedule_wakeup(tp, _due_ms(queue[0]))
            return
        del self._held[tp]
        self._resume(tp)

    def _resume(self, tp: TopicPartition) -> None:
        """Fetch from the partition again, unless it still waits for a held record or for
        its unfinished offsets to drain."""
        assert self._consumer is not None
        tracker = self._trackers.get(tp)
        if tp in self._held or (tracker is not None and tracker.stalled):
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

    def _finished(self, tp: TopicPartition, offset: int) -> None:
        tracker = self._trackers.get(tp)  # None: the partition was revoked meanwhile
        if tracker is not None and tracker.done(offset):
            log.info("delivery partition resumed", extra={"topic": tp.topic})
            self._resume(tp)

    async def _dispatch(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        """Start the record's task. A destination that already has its bound of deliveries
        outstanding (running or waiting for its slots) gets this one put off instead, so a
        stuck or slow destination cannot take every global slot (head-of-line)."""
        await self._slots.acquire()
        put_off = not self._admission.enqueue(record.key or b"")
        task = asyncio.create_task(self._run_one(tp, record, put_off=put_off))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_one(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], *, put_off: bool
    ) -> None:
        """Handle one record to its end; its offset is finished however that went, unless
        the recorder is unavailable (the worker then stops with the offset unfinished)."""
        try:
            delivery = orjson.loads(record.value)
            if put_off:
                await self._put_off(delivery)
            else:
                async with self._per_destination[ref_of_delivery(delivery)]:
                    await self._deliver(delivery)
            self._finished(tp, record.offset)
        except asyncio.CancelledError:
            raise
        except RecorderUnavailable as exc:
            # Not finished, on purpose: the worker stops and the delivery is done again by
            # the next owner of the partition, never skipped.
            if self._failure is None:
                self._failure = exc
        except Exception as exc:  # the edge of a delivery task: nothing may stall the partition
            # No attempt could be recorded (a malformed record, a bug outside the sink):
            # logged without its text, counted, and skipped so the partition moves on.
            metrics.DELIVERY_HANDLING_ERRORS.inc()
            log.error(
                "delivery record skipped: unexpected %s",
                type(exc).__name__,
                extra={"topic": tp.topic, "offset": record.offset},
            )
            self._finished(tp, record.offset)
        finally:
            self._slots.release()
            if not put_off:
                self._admission.finished(record.key or b"")

    # -- one delivery --------------------------------------------------------------------

    async def _deliver(self, delivery: dict[str, Any]) -> None:
        destination = await self._admitted(delivery)
        if destination is None:
            return
        event = delivery["event"]
        started = time.perf_counter()
        try:
            body = orjson.dumps(event)
            publisher = await self._publishers.get(destination)
            result = await publisher.publish(delivery["id"], event, body)
        except DeliveryError as exc:
            await self._failed(delivery, destination, exc, started)
            return
        except Exception as exc:  # a sink or serializer bug must still end in an attempt
            await self._failed(delivery, destination, unexpected(exc, delivery), started)
            return
        latency_ms = (time.perf_counter() - started) * 1000
        self._admission.outcome(destination, Outcome.SUCCESS)
        await self._outcomes.succeeded(delivery, destination, result, latency_ms)

    async def _failed(
        self,
        delivery: dict[str, Any],
        destination: dict[str, Any],
        exc: DeliveryError,
        started: float,
    ) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        permanent = isinstance(exc, PermanentError)
        self._admission.outcome(destination, Outcome.PERMANENT if permanent else Outcome.RETRYABLE)
        await self._outcomes.failed(delivery, destination, exc, latency_ms)

    async def _admitted(self, delivery: dict[str, Any]) -> dict[str, Any] | None:
        """The destination to attempt the delivery to now, once its circuit lets it through
        and its rate limit allows; None if the delivery was dropped or deferred instead."""
        destination = await self._routable(delivery)
        if destination is None:
            return None
        wait_s = self._admission.circuit_wait_s(delivery)
        if wait_s is not None:
            too_long = self._admission.held_too_long(delivery)
            await self._outcomes.deferred(delivery, destination, wait_s, give_up=too_long)
            return None
        if destination.get("rate_limit"):
            await self._admission.pace(destination)
            destination = await self._routable(delivery)  # it may have changed meanwhile
        return destination

    async def _put_off(self, delivery: dict[str, Any]) -> None:
        """Its destination has too many deliveries outstanding here: to retry tier 1, no
        attempt counted (dropped instead if the destination is gone or inactive)."""
        destination = await self._routable(delivery)
        if destination is not None:
            await self._outcomes.deferred(delivery, destination, 0.0, reason="queue_full")

    async def _routable(self, delivery: dict[str, Any]) -> dict[str, Any] | None:
        """The destination's current record, or None if it is gone or inactive: the
        delivery is then dropped, with a final `canceled` status recorded (and counted).

        Gone includes a destination of the same tenant and id created after the one the
        delivery was routed to was deleted (another generation): it must get nothing of
        its predecessor's."""
        destination = await self._view.generation_of(
            delivery["tenant"],
            delivery["destination_id"],
            delivery.get("destination_generation"),
            self._settings.view_wait_timeout_s,
        )
        if destination is None:
            reason = "deleted"
        elif destination["status"] == "inactive":
            reason = "inactive"
        else:
            return destination
        await self._outcomes.canceled(delivery, reason)
        return None

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
        self._admission.observe()

    # -- offsets -------------------------------------------------------------------------

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit, per partition, the offset below the lowest unfinished delivery."""
        if self._consumer is None:
            return
        assignment = self._consumer.assignment()
        offsets = {}
        for tp, tracker in self._trackers.items():
            if (only is None or tp in only) and tp in assignment:
                offset = tracker.committable()
                if offset is not None:
                    offsets[tp] = offset
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance took partitions away meanwhile: their new owner starts from the
            # last committed offsets (at-least-once); this worker carries on with the rest.
            log.warning("commit refused after a rebalance (%s)", type(exc).__name__)

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Drop the state of partitions this worker no longer owns."""
        for tp in partitions:
            self._trackers.pop(tp, None)
            self._held.pop(tp, None)
            handle = self._wakeups.pop(tp, None)
            if handle is not None:
                handle.cancel()
