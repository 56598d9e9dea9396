"""A delivery's way through the runner, once the transport has it: policy, lanes, sink.

    arrived → policy.before_attempt → its lane (pipeline/lanes.py) → its turn came →
    policy.before_attempt again (the circuit, the destination now) → the sink →
    policy.after_attempt → outcomes (the recorder) → finished(partition, offset)

Every delivery handed in ends in exactly one call of `finished`, however it went, except
when its outcome could not be recorded: then `failure` is set, the offset stays
unfinished, and the worker stops (the next owner of the partition does it again).

A delivery of a destination that orders per key first joins its key's line
(pipeline/ordering.py) and goes on only as the line's head; a head's retries (and the
turns its open circuit skips) wait here, in place, until due, instead of in a retry tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from pipeline import delivery_record, metrics, policy, tracing
from pipeline.attempts import AttemptRecorder, RecorderUnavailable, next_try
from pipeline.ids import ref_of_delivery
from pipeline.lanes import Job, Lanes
from pipeline.operator_events import RunnerEvents
from pipeline.ordering import KeyLines, line_of
from pipeline.outcomes import Outcomes, unexpected
from pipeline.publishers import PublisherCache
from pipeline.retry import DeadLetter, Retry, Schedule
from pipeline.settings import Settings
from pipeline.sinks.base import DeliveryError, DeliveryResult
from pipeline.view import DestinationView, ViewTimeout

log = logging.getLogger(__name__)

Finished = Callable[[TopicPartition, int], None]
# A destination the view does not have (or has in another generation) may only be unknown
# to this view yet: the view catches up before the delivery is canceled.
DELETED = policy.Cancel("deleted")


class Dispatcher:
    """Takes due deliveries from the runner's transport and sees each one to its end."""

    def __init__(
        self,
        settings: Settings,
        view: DestinationView,
        recorder: AttemptRecorder,
        publishers: PublisherCache,
        finished: Finished,
    ) -> None:
        self._settings = settings
        self._view = view
        self._publishers = publishers
        self._finished = finished
        schedule = Schedule(settings.retry_base_delay_s, settings.max_retries)
        self._rules = policy.Rules(
            schedule, settings.sink_max_queue_wait_s, settings.auto_disable_after_dead_letters
        )
        self._lanes = Lanes(settings, self._turn_came, self._start)
        self._outcomes = Outcomes(recorder, RunnerEvents.of(settings, recorder.event))
        self._lines = KeyLines()
        self._again: dict[Job, asyncio.TimerHandle] = {}  # heads waiting for their retry
        self.tasks: set[asyncio.Future[None]] = set()
        self.failure: RecorderUnavailable | None = None  # set: the worker must stop
        self._traced = tracing.enabled()

    @property
    def queued(self) -> int:
        """Deliveries waiting in the lanes for their turn (fetched, in memory)."""
        return self._lanes.queued

    def observe(self) -> None:
        """Set the open circuits gauge; forget lanes long idle (called by a sampler)."""
        metrics.CIRCUITS_OPEN.set(self._lanes.circuits.open_count())
        metrics.DELIVERIES_QUEUED.set(self._lanes.queued)
        metrics.DELIVERIES_HELD_FOR_ORDER.set(self._lines.held)
        self._lanes.forget_idle()

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions revoked: their deliveries still queued, or waiting in a key's line
        or for an in-place retry, are left to the new owner."""
        revoked = set(partitions)
        dropped = self._lanes.drop(revoked)
        for job in [job for job in self._again if job.partition in revoked]:
            self._again.pop(job).cancel()
        for head in self._lines.drop(revoked):
            self._go_on(head)
        if dropped:
            log.info("left %d queued deliveries to the partitions' new owner", dropped)

    def stop(self) -> None:
        """The runner stops: no head waiting for its retry is tried again here (its offset
        is unfinished; the partition's next owner does it)."""
        for handle in self._again.values():
            handle.cancel()
        self._again.clear()

    def arrived(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        """A due delivery: decide at once whether it may join its destination's lane."""
        try:
            delivery = delivery_record.decode(record.value)
            destination = self._view.get(delivery["tenant"], delivery["destination_id"])
            job = Job(tp, record.offset, delivery, destination or {}, ref_of_delivery(delivery))
            if self._traced:
                job.trace = tracing.context_of(record.headers)
        except Exception as exc:  # a malformed record: nothing to attempt or record
            self._skip_record(tp, record.offset, exc)
            return
        canceled = policy.routable(destination, delivery.get("destination_generation"))
        # Perhaps only unknown (or not yet enabled) in this view: catch up before deciding.
        catch_up = canceled == DELETED or (canceled is not None and policy.restarted(delivery))
        try:
            # A key's line is joined now, in arrival order, also by a delivery whose
            # destination this view does not know yet (it may order per key): one catching
            # up must not let the key's next delivery pass it.
            line = line_of(job, unknown=catch_up)
            if line is not None and not self._lines.join(job, line):
                return  # it waits behind its key's head
            if catch_up:
                self._spawn(self._arrived_after_sync(job), job.trace)
            else:
                self._proceed(job)
        except Exception as exc:  # nothing may stop the consume loop
            self._skip_job(job, exc)

    async def _arrived_after_sync(self, job: Job) -> None:
        delivery = job.delivery
        try:
            if policy.restarted(delivery):  # the enable before it may not be read yet
                with contextlib.suppress(ViewTimeout, KafkaError):
                    await self._view.sync(self._settings.view_wait_timeout_s)
            destination = await self._view.generation_of(
                delivery["tenant"],
                delivery["destination_id"],
                delivery.get("destination_generation"),
                self._settings.view_wait_timeout_s,
            )
            job.destination = destination or {}
            self._proceed(job)
        except Exception as exc:  # the edge of a task: the partition must move on
            self._skip_job(job, exc)

    def _proceed(self, job: Job) -> None:
        """Ask the policy with what the lane knows now: join the lane, or not attempted. A
        line's head is never put off (only one per key is in the lane)."""
        lane = policy.LaneState(
            circuit_wait_s=self._circuit_wait_s(job, probe=False),
            queue_wait_s=self._lanes.queue_wait_s(job.ref, job.destination.get("rate_limit")),
            dead_letters_in_row=self._outcomes.dead_letters_in_row(job.destination),
        )
        decision = self._before(job, lane)
        if isinstance(decision, policy.Attempt) or (
            isinstance(decision, policy.Defer) and self._lines.ordered(job)
        ):
            self._lanes.submit(job)
        else:
            self._settle(job, self._not_attempted(job, decision))

    def _turn_came(self, job: Job) -> bool:
        """The job is first in its lane and a slot is free: attempt it now (True), or was
        it canceled or skipped meanwhile?"""
        try:
            job.destination = (
                self._view.get(job.delivery["tenant"], job.delivery["destination_id"]) or {}
            )
            lane = policy.LaneState(
                circuit_wait_s=self._circuit_wait_s(job, probe=True),
                dead_letters_in_row=self._outcomes.dead_letters_in_row(job.destination),
            )
            decision = self._before(job, lane)
        except Exception as exc:  # nothing may stop the lane or the consume loop
            self._skip_job(job, exc)
            return False
        if isinstance(decision, policy.Attempt):
            return True
        self._settle(job, self._not_attempted(job, decision))
        return False

    def _before(self, job: Job, lane: policy.LaneState) -> policy.Before:
        destination = job.destination or None
        now_ms = int(time.time() * 1000)
        return policy.before_attempt(job.delivery, destination, lane, self._rules, now_ms=now_ms)

    def _circuit_wait_s(self, job: Job, *, probe: bool) -> float | None:
        if policy.asked_for_now(job.delivery):
            return None
        circuits = self._lanes.circuits
        return circuits.admit(job.ref) if probe else circuits.peek(job.ref)

    def _start(self, job: Job) -> None:
        """The job has its slots: attempt it."""
        self._settle(job, self._attempt(job))

    async def _attempt(self, job: Job) -> int | None:
        """One attempt, in a `herald.attempt` span when its delivery is traced (the sink's
        request and the record of its outcome are children of it); for a line's head to
        retry in place, when (epoch ms) it is due again."""
        if job.trace is None or not tracing.sampled(job.trace):
            # Untraced, or unsampled: no span of its own (the sink's request and a retry
            # record still carry the delivery's context, which runs with this task).
            return await self._attempt_and_record(job)
        delivery = job.delivery
        attributes: dict[str, str | int] = {
            tracing.EVENT_ID: str(delivery["event"].get("id")),
            tracing.DELIVERY_ID: str(delivery["id"]),
            tracing.DESTINATION_ID: str(delivery["destination_id"]),
            "herald.destination_type": str(job.destination.get("type")),
            "herald.attempt": int(delivery["attempt"]) + 1,
        }
        with tracing.span("herald.attempt", attributes, SpanKind.CLIENT):
            return await self._attempt_and_record(job)

    async def _attempt_and_record(self, job: Job) -> int | None:
        delivery, destination = job.delivery, job.destination
        started = time.perf_counter()
        result: DeliveryResult | None = None
        error: DeliveryError | None = None
        try:
            publisher = await self._publishers.get(destination)
            body = delivery[delivery_record.BODY]
            result = await publisher.publish(delivery["id"], delivery["event"], body)
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # a sink or serializer bug must still end in an attempt
            error = unexpected(exc, delivery)
        latency_ms = (time.perf_counter() - started) * 1000
        outcome, overloaded = policy.health_of(error)
        change = self._lanes.finished(job, outcome, overloaded)  # its slots are free now
        if change is not None:
            metrics.CIRCUIT_CHANGES.labels(type=destination["type"], state=change).inc()
            log.warning(
                "destination circuit %s",
                change,
                extra={"destination_id": delivery["destination_id"]},
            )
        lane = policy.LaneState(dead_letters_in_row=self._outcomes.dead_letters_in_row(destination))
        now_ms = int(time.time() * 1000)
        decision = policy.after_attempt(
            delivery, destination, error, lane, self._rules, now_ms=now_ms
        )
        if isinstance(decision, policy.Delivered):
            assert result is not None
            record = self._outcomes.delivered(delivery, destination, result, latency_ms, decision)
            in_place_step: Retry | DeadLetter | None = None
        else:
            assert error is not None
            in_place = self._in_place(job, decision.step)
            in_place_step = decision.step if in_place else None
            record = self._outcomes.failed(
                delivery, destination, error, latency_ms, decision, in_place=in_place
            )
        if job.trace is None or not trace.get_current_span().is_recording():  # no attempt span
            await record
        else:
            if error is not None:
                tracing.failed(trace.get_current_span(), str(error))  # the attempt's span
            # The retry-tier record written here carries this span's context: the next
            # attempt is its child.
            kind: dict[str, str | int] = {"herald.outcome": type(decision).__name__.lower()}
            with tracing.span("herald.record", kind):
                await record
        if in_place_step is None:
            return None
        return self._again_at(job, in_place_step, skipped=False)

    async def _not_attempted(self, job: Job, decision: policy.Before) -> int | None:
        """A delivery canceled, skipped or put off; for a line's head skipped along its
        schedule, when (epoch ms) it is due again."""
        if isinstance(decision, policy.Cancel):
            await self._outcomes.canceled(job.delivery, decision.reason)
        elif isinstance(decision, policy.Skip):
            in_place = self._in_place(job, decision.step)
            await self._outcomes.skipped(job.delivery, job.destination, decision, in_place=in_place)
            if in_place:
                return self._again_at(job, decision.step, skipped=True)
        elif isinstance(decision, policy.Defer):
            await self._outcomes.deferred(job.delivery, job.destination, decision)
        return None

    # -- a line's head, retried in place ---------------------------------------------------

    def _in_place(self, job: Job, step: Retry | DeadLetter) -> bool:
        """A line's head is retried here, never through a retry tier: it stays the head."""
        return isinstance(step, Retry) and self._lines.ordered(job)

    def _again_at(self, job: Job, step: Retry | DeadLetter, *, skipped: bool) -> int:
        """The head becomes its next try (as the retry record would carry it); its due ms."""
        assert isinstance(step, Retry)
        job.delivery = next_try(job.delivery, step, skipped=skipped)
        return step.due_ms

    def _wait_in_place(self, job: Job, due_ms: int) -> None:
        delay_s = max(0.0, due_ms / 1000 - time.time())
        self._again[job] = asyncio.get_running_loop().call_later(delay_s, self._due_again, job)

    def _due_again(self, job: Job) -> None:
        self._again.pop(job, None)
        self._go_on(job)

    def _go_on(self, job: Job) -> None:
        """A line's head goes on (it just became the head, or its retry is due), with its
        destination as it is now."""
        try:
            delivery = job.delivery
            job.destination = self._view.get(delivery["tenant"], delivery["destination_id"]) or {}
            self._proceed(job)
        except Exception as exc:  # nothing may stop the line
            self._skip_job(job, exc)

    # -- every job ends here ---------------------------------------------------------------

    def _settle(self, job: Job, work: Awaitable[int | None]) -> None:
        """Run `work` to the end of the job: its offset is finished however that went,
        unless its outcome could not be recorded (the worker then stops, the offset left
        unfinished: the next owner of the partition does the delivery again), or unless
        it is a line's head to retry in place (`work` returns when it is due)."""
        self._spawn(self._settled(job, work), job.trace)

    async def _settled(self, job: Job, work: Awaitable[int | None]) -> None:
        try:
            again_at_ms = await work
        except asyncio.CancelledError:
            raise
        except RecorderUnavailable as exc:
            if self.failure is None:
                self.failure = exc
            return
        except Exception as exc:  # the edge of a delivery task: nothing may stall the partition
            self._skip_job(job, exc)
            return
        if again_at_ms is not None:
            if self._lines.ordered(job):  # not if its partition was revoked meanwhile
                self._wait_in_place(job, again_at_ms)
            return
        self._finished(job.partition, job.offset)
        self._next_of(job)

    def _next_of(self, job: Job) -> None:
        """The job is over: the next of its key's line (if it was a head) goes on."""
        head = self._lines.done(job)
        if head is not None:
            self._go_on(head)

    def _spawn(self, work: Awaitable[None], trace_context: tracing.Context | None = None) -> None:
        """Run `work` as a task of its own (in `trace_context`, the delivery's trace)."""
        task: asyncio.Future[None] = asyncio.get_running_loop().create_task(
            work,  # type: ignore[arg-type]
            context=tracing.run_in(trace_context),
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _skip_job(self, job: Job, exc: Exception) -> None:
        """`_skip_record` for a job: the next of its key's line goes on."""
        self._skip_record(job.partition, job.offset, exc)
        self._next_of(job)

    def _skip_record(self, tp: TopicPartition, offset: int, exc: Exception) -> None:
        """No attempt could be recorded (a malformed record, a bug outside the sink):
        logged without its text, counted, and skipped so the partition moves on."""
        metrics.DELIVERY_HANDLING_ERRORS.inc()
        log.error(
            "delivery record skipped: unexpected %s",
            type(exc).__name__,
            extra={"topic": tp.topic, "offset": offset},
        )
        self._finished(tp, offset)
