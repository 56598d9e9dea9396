"""The delivery runner: consumes `deliveries` and the retry tiers, pushes through sinks.

A plain aiokafka consumer in a group (not a Faust agent with concurrency > 1, which can
commit past a message still in flight). Many deliveries run at once per partition, at most
`sink_max_in_flight_per_destination` per destination, paced to the destination's
`rate_limit` if it has one, and not at all while its circuit is open (deferred to a retry
tier without counting an attempt) nor beyond `sink_max_queued_per_destination`
outstanding (put off the same way): pipeline/admission.py decides. Each
partition's committed offset stays below its lowest unfinished delivery. A retry-tier
record that is not yet due pauses its partition until it is (pause/resume, never a sleep
in the consume loop).
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
from aiokafka.structs import ConsumerRecord

from pipeline import metrics
from pipeline.admission import Admission
from pipeline.attempts import AttemptRecorder
from pipeline.circuit import Outcome
from pipeline.ids import ref_of_delivery, ref_of_destination
from pipeline.offsets import PartitionTracker
from pipeline.publishers import PublisherCache
from pipeline.retry import DeadLetter, Schedule, defer_step, next_step
from pipeline.settings import Settings
from pipeline.sinks.base import DeliveryError, PermanentError, RetryableError
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
        self._recorder = recorder
        self._publishers = publishers
        self._schedule = Schedule(settings.retry_base_delay_s, settings.max_retries)
        self._topics = [DELIVERIES] + [retry_topic(n) for n in range(1, settings.max_retries + 1)]
        # Retry topic → tier label, for the backlog gauges.
        self._tier_labels = {
            retry_topic(n): metrics.tier_label(n) for n in range(1, settings.max_retries + 1)
        }
        self._consumer: AIOKafkaConsumer | None = None
        self._trackers: dict[TopicPartition, PartitionTracker] = defaultdict(PartitionTracker)
        self._held: dict[TopicPartition, deque[ConsumerRecord[bytes, bytes]]] = {}
        self._wakeups: dict[TopicPartition, asyncio.TimerHandle] = {}
        self._slots = asyncio.Semaphore(settings.sink_max_in_flight)
        # Per destination ref (tenant, id, generation): a recreated id starts fresh.
        self._per_destination: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(settings.sink_max_in_flight_per_destination)
        )
        self._admission = Admission(settings, self._schedule)
        self._tasks: set[asyncio.Task[None]] = set()
        # Deliveries in a row that exhausted their retries, per destination (this process).
        self._dead_letters: dict[str, int] = defaultdict(int)
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def group_id(self) -> str:
        """The consumer group of every worker's runner."""
        return f"{self._settings.app_id}-sinks"

    @property
    def topics(self) -> list[str]:
        """The topics the runner consumes: `deliveries` and every retry tier."""
        return list(self._topics)

    async def start(self) -> None:
        """Join the consumer group and start consuming."""
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
        self._loop_task = asyncio.create_task(self._consume(), name="delivery-runner")

    async def stop(self) -> None:
        """Stop fetching, let in-flight deliveries finish briefly, commit, leave the group."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
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
        assert self._consumer is not None
        last_commit = time.monotonic()
        while True:
            batches = await self._consumer.getmany(timeout_ms=100, max_records=500)
            for tp, records in batches.items():
                tracker = self._trackers[tp]
                for record in records:
                    tracker.add(record.offset)
                    if tp in self._held or _due_ms(record) > time.time() * 1000:
                        self._hold(tp, record)
                    else:
                        await self._dispatch(tp, record)
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
        assert self._consumer is not None
        if tp in self._consumer.assignment():
            self._consumer.resume(tp)

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
        try:
            delivery = orjson.loads(record.value)
            if put_off:
                await self._put_off(delivery)
            else:
                async with self._per_destination[ref_of_delivery(delivery)]:
                    await self._deliver(delivery)
            tracker = self._trackers.get(tp)
            if tracker is not None:  # None: the partition was revoked meanwhile
                tracker.done(record.offset)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Not marked done: the offset stays uncommitted and the record is retried
            # after a restart or rebalance rather than lost.
            metrics.DELIVERY_HANDLING_ERRORS.inc()
            log.exception(
                "delivery handling failed", extra={"topic": tp.topic, "offset": record.offset}
            )
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
        body = orjson.dumps(event)
        started = time.perf_counter()
        try:
            publisher = await self._publishers.get(destination)
            result = await publisher.publish(delivery["id"], event, body)
        except DeliveryError as exc:
            latency_ms = (time.perf_counter() - started) * 1000
            permanent = isinstance(exc, PermanentError)
            self._admission.outcome(
                destination, Outcome.PERMANENT if permanent else Outcome.RETRYABLE
            )
            await self._failed(delivery, destination, exc, latency_ms)
            return
        latency_ms = (time.perf_counter() - started) * 1000
        self._admission.outcome(destination, Outcome.SUCCESS)
        await self._recorder.success(delivery, result, latency_ms)
        # Counted once recorded: a delivery whose attempt could not be recorded is redone.
        metrics.record_attempt(
            destination["type"], "success", delivery["attempt"], latency_ms / 1000
        )
        metrics.record_delivered(destination["type"], event["created_at"], time.time())
        self._dead_letters.pop(ref_of_destination(destination), None)
        if not destination.get("verified_at"):
            await self._recorder.verified(destination)

    async def _admitted(self, delivery: dict[str, Any]) -> dict[str, Any] | None:
        """The destination to attempt the delivery to now, once its circuit lets it through
        and its rate limit allows; None if the delivery was dropped or deferred instead."""
        destination = await self._routable(delivery)
        if destination is None:
            return None
        wait_s = self._admission.circuit_wait_s(delivery)
        if wait_s is not None:
            await self._defer(delivery, destination, wait_s, "circuit_open")
            return None
        if destination.get("rate_limit"):
            await self._admission.pace(destination)
            destination = await self._routable(delivery)  # it may have changed meanwhile
        return destination

    async def _defer(
        self, delivery: dict[str, Any], destination: dict[str, Any], wait_s: float, reason: str
    ) -> None:
        """Put the delivery off without an attempt. Time put off by an open circuit adds
        up; past `circuit_max_hold_s` the delivery is dead-lettered instead (recorded as a
        failed attempt that was not made, so the log shows why). A full queue never
        dead-letters: its destination is making progress, or its circuit will open."""
        circuit = reason == "circuit_open"
        if circuit and self._admission.held_too_long(delivery):
            give_up = DeadLetter("not attempted: circuit open for too long")
            exc = RetryableError(give_up.reason)
            await self._recorder.failure(delivery, exc, 0.0, give_up)
            await self._recorder.dead_letter(delivery, give_up.reason)
            metrics.DEAD_LETTERS.labels(type=destination["type"]).inc()
            await self._count_dead_letter(destination)
            return
        step = defer_step(self._schedule, wait_s, now_ms=int(time.time() * 1000))
        await self._recorder.defer(delivery, step, reason.replace("_", " "), held=circuit)
        metrics.DELIVERIES_DEFERRED.labels(type=destination["type"], reason=reason).inc()

    async def _put_off(self, delivery: dict[str, Any]) -> None:
        """Its destination has too many deliveries outstanding here: to retry tier 1, no
        attempt counted (dropped instead if the destination is gone or inactive)."""
        destination = await self._routable(delivery)
        if destination is not None:
            await self._defer(delivery, destination, 0.0, "queue_full")

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
        metrics.DELIVERIES_DROPPED.labels(reason=reason).inc()
        await self._recorder.canceled(delivery, f"destination {reason}")
        return None

    async def _failed(
        self,
        delivery: dict[str, Any],
        destination: dict[str, Any],
        exc: DeliveryError,
        latency_ms: float,
    ) -> None:
        permanent = isinstance(exc, PermanentError)
        retry_after = exc.retry_after_s if isinstance(exc, RetryableError) else None
        step = next_step(
            self._schedule,
            delivery["attempt"],
            permanent=permanent,
            now_ms=int(time.time() * 1000),
            retry_after_s=retry_after,
        )
        await self._recorder.failure(delivery, exc, latency_ms, step)
        metrics.record_attempt(
            destination["type"], "failed", delivery["attempt"], latency_ms / 1000
        )
        if isinstance(step, DeadLetter):
            await self._recorder.dead_letter(delivery, step.reason)
            metrics.DEAD_LETTERS.labels(type=destination["type"]).inc()
            await self._count_dead_letter(destination)
        else:
            await self._recorder.retry(delivery, step)
        if permanent and exc.response_status == 410:
            await self._recorder.auto_disable(destination, "the receiver answered 410 Gone")

    async def _count_dead_letter(self, destination: dict[str, Any]) -> None:
        threshold = self._settings.auto_disable_after_dead_letters
        ref = ref_of_destination(destination)
        count = self._dead_letters[ref] = self._dead_letters[ref] + 1
        if threshold and count >= threshold:
            await self._recorder.auto_disable(
                destination, f"the last {count} deliveries exhausted their retries"
            )

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
        if offsets:
            await self._consumer.commit(offsets)

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Drop the state of partitions this worker no longer owns."""
        for tp in partitions:
            self._trackers.pop(tp, None)
            self._held.pop(tp, None)
            handle = self._wakeups.pop(tp, None)
            if handle is not None:
                handle.cancel()
