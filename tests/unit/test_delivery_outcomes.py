"""What a failed attempt leads to (pipeline/retry.py), what the recorder writes for it
(pipeline/attempts.py) and the runner's bookkeeping that must never stall: the policy as
tables of cases, the recorder against a producer that only remembers what it was given."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
)

from pipeline import delivery_record
from pipeline.attempts import AttemptRecorder, RecorderUnavailable
from pipeline.offsets import PartitionTracker
from pipeline.outcomes import UNEXPECTED_ERROR, Outcomes, unexpected
from pipeline.policy import Failed, LaneState, Rules, after_attempt
from pipeline.retry import (
    NEW_CREDENTIALS_GRACE_S,
    DeadLetter,
    Retry,
    Schedule,
    after_failure,
    next_step,
)
from pipeline.sinks.base import DeliveryError, EventRejected, PermanentError, RetryableError
from pipeline.topics import DESTINATION_CHANGES, EVENTS, retry_topic


class Producer:
    """Remembers every record sent; fails the first `failures` sends."""

    def __init__(self, failures: int = 0, error: type[KafkaError] = KafkaConnectionError) -> None:
        self.sent: list[tuple[str, dict[str, Any], list[tuple[str, bytes]] | None]] = []
        self.failures = failures
        self.error = error

    async def send_and_wait(
        self, topic: str, value: bytes, *, key: bytes, headers: Any = None
    ) -> None:
        if self.failures:
            self.failures -= 1
            raise self.error("broker gone")
        decoded = (
            delivery_record.decode(value)
            if value[:1] == delivery_record.VERSION
            else orjson.loads(value)
        )
        self.sent.append((topic, decoded, headers))

    def topics(self) -> list[str]:
        return [topic for topic, _, _ in self.sent]


async def _drained(tasks: set[asyncio.Future[None]]) -> None:
    """Wait until every task the runner started (and any they started) has ended."""
    async with asyncio.timeout(5):
        while tasks:
            await asyncio.wait(set(tasks))


def _recorder(producer: Producer) -> AttemptRecorder:
    return AttemptRecorder(producer, "herald-due-ms", give_up_s=0.05, send_backoff_s=0.01)


def _delivery(attempt: int = 0) -> dict[str, Any]:
    """A delivery as the runner decodes it: the record's head, and its body."""
    return {
        "id": "evdl_1",
        "event": {"id": "evt_1", "type": "a.b", "created_at": "x"},
        "tenant": "t",
        "destination_id": "evtd_1",
        "attempt": attempt,
        delivery_record.BODY: b'{"id":"evt_1","type":"a.b","data":{},"created_at":"x"}',
    }


def _destination(**fields: Any) -> dict[str, Any]:
    return {
        "id": "evtd_1",
        "tenant": "t",
        "type": "webhook",
        "name": "d",
        "status": "active",
        "verified_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        **fields,
    }


# -- C18: a long Retry-After moves the due time, not the attempt count ------------------


def test_a_long_retry_after_uses_one_retry_not_eight() -> None:
    schedule = Schedule(base_delay_s=30, max_retries=10)
    step = next_step(schedule, 0, permanent=False, now_ms=0, retry_after_s=3600)
    assert isinstance(step, Retry)
    assert step.due_ms >= 3600 * 1000  # the hint is honoured
    assert step.attempt == 1  # ... and costs one retry: nine remain
    # The tenth attempt after that still gets its retry; only the eleventh dead-letters.
    assert isinstance(next_step(schedule, 9, permanent=False, now_ms=0, retry_after_s=3600), Retry)
    assert isinstance(next_step(schedule, 10, permanent=False, now_ms=0), DeadLetter)


async def test_the_retry_record_carries_the_next_attempt_number_in_a_later_tier() -> None:
    producer = Producer()
    step = next_step(Schedule(), 0, permanent=False, now_ms=0, retry_after_s=3600)
    assert isinstance(step, Retry)
    await _recorder(producer).retry(_delivery(), step)
    [(topic, record, headers)] = producer.sent
    assert topic == retry_topic(step.tier) and step.tier == 8
    assert record["attempt"] == 1
    assert headers == [("herald-due-ms", str(step.due_ms).encode())]


async def test_a_dead_letter_carries_a_summary_of_the_last_error() -> None:
    producer = Producer()
    await _recorder(producer).dead_letter(_delivery(), "retries exhausted", "HTTP 503" * 100)
    [(topic, record, _)] = producer.sent
    assert topic == "deliveries.dlq" and record["dead_letter_reason"] == "retries exhausted"
    assert record["last_error"] == ("HTTP 503" * 100)[:200]


# -- C16: failures the event causes, and brand-new credentials --------------------------

CASES = [
    # (error, verified, credentials age, expected kind, counts toward auto-disable)
    (RetryableError("503"), True, 1e9, Retry, None),
    (PermanentError("410", response_status=410), True, 1e9, DeadLetter, True),
    (EventRejected("DetailType over 128 characters"), True, 1e9, DeadLetter, False),
    (EventRejected("too large"), False, 0.0, DeadLetter, False),
    (PermanentError("AccessDenied", auth=True), False, 5.0, Retry, None),
    (PermanentError("AccessDenied", auth=True), False, NEW_CREDENTIALS_GRACE_S, DeadLetter, True),
    (PermanentError("AccessDenied", auth=True), True, 5.0, DeadLetter, True),
    (PermanentError("bad queue url"), False, 5.0, DeadLetter, True),
]


@pytest.mark.parametrize(("error", "verified", "age_s", "kind", "counts"), CASES)
def test_what_a_failure_leads_to(
    error: Exception, verified: bool, age_s: float, kind: type, counts: bool | None
) -> None:
    step = after_failure(Schedule(), 0, error, verified=verified, credentials_age_s=age_s, now_ms=0)  # type: ignore[arg-type]
    assert isinstance(step, kind)
    if isinstance(step, DeadLetter):
        assert step.counts_toward_disable is counts


async def _fail(
    outcomes: Outcomes,
    delivery: dict[str, Any],
    destination: dict[str, Any],
    error: DeliveryError,
    rules: Rules,
) -> None:
    """What the runner does after a failed attempt: ask the policy, record its answer."""
    lane = LaneState(dead_letters_in_row=outcomes.dead_letters_in_row(destination))
    decision = after_attempt(delivery, destination, error, lane, rules, now_ms=0)
    assert isinstance(decision, Failed)
    await outcomes.failed(delivery, destination, error, 1.0, decision)


async def test_events_a_destination_cannot_take_never_disable_it() -> None:
    producer = Producer()
    outcomes, rules = Outcomes(_recorder(producer)), Rules(Schedule(), disable_after=2)
    destination = _destination()
    for _ in range(5):
        await _fail(outcomes, _delivery(), destination, EventRejected("too large"), rules)
    assert "deliveries.dlq" in producer.topics()
    assert DESTINATION_CHANGES not in producer.topics()
    # Two of its own making in a row do.
    for _ in range(2):
        await _fail(outcomes, _delivery(10), destination, RetryableError("503"), rules)
    assert producer.topics().count(DESTINATION_CHANGES) == 1


# -- C15: the auto-disable guard is per version of the destination ----------------------


async def test_a_destination_enabled_again_is_disabled_again_by_the_next_410() -> None:
    producer = Producer()
    recorder = _recorder(producer)
    gone = PermanentError("410 Gone", response_status=410)
    outcomes, rules = Outcomes(recorder), Rules(Schedule(), disable_after=5)
    first = _destination(updated_at="2026-01-01T00:00:00.000Z")
    await _fail(outcomes, _delivery(), first, gone, rules)
    await _fail(outcomes, _delivery(), first, gone, rules)  # the view has not caught up
    assert producer.topics().count(DESTINATION_CHANGES) == 1
    assert producer.topics().count(EVENTS) == 1  # one event_destination.disabled
    enabled = _destination(updated_at="2026-01-01T00:05:00.000Z")  # the user enabled it
    await _fail(outcomes, _delivery(), enabled, gone, rules)
    assert producer.topics().count(DESTINATION_CHANGES) == 2
    change = [r for t, r, _ in producer.sent if t == DESTINATION_CHANGES][-1]
    assert change["op"] == "auto_disable"


async def test_the_dead_letter_count_starts_anew_when_the_destination_changes() -> None:
    producer = Producer()
    outcomes = Outcomes(_recorder(producer))
    rules = Rules(Schedule(max_retries=0), disable_after=2)
    await _fail(outcomes, _delivery(), _destination(), RetryableError("503"), rules)
    enabled = _destination(updated_at="2026-01-02T00:00:00Z")
    await _fail(outcomes, _delivery(), enabled, RetryableError("503"), rules)
    assert DESTINATION_CHANGES not in producer.topics()
    await _fail(outcomes, _delivery(), enabled, RetryableError("503"), rules)
    assert DESTINATION_CHANGES in producer.topics()


class GatedProducer(Producer):
    """Holds every send until `gate` is set: outcomes whose records are still being written."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def send_and_wait(
        self, topic: str, value: bytes, *, key: bytes, headers: Any = None
    ) -> None:
        await self.gate.wait()
        await super().send_and_wait(topic, value, key=key, headers=headers)


async def test_dead_letters_decided_while_others_are_written_count_in_the_row() -> None:
    producer = GatedProducer()
    outcomes = Outcomes(_recorder(producer))
    rules = Rules(Schedule(max_retries=0), disable_after=5)
    destination = _destination()
    failing = [
        asyncio.ensure_future(
            _fail(outcomes, _delivery(), destination, RetryableError("503"), rules)
        )
        for _ in range(5)
    ]
    await asyncio.sleep(0)  # each decides, then waits for its writes
    assert outcomes.dead_letters_in_row(destination) == 5
    producer.gate.set()
    await asyncio.gather(*failing)
    assert producer.topics().count(DESTINATION_CHANGES) == 1  # the fifth disabled it


# -- B6: nothing leaves an offset unfinished; the recorder retries, then says so --------


def test_an_unexpected_error_becomes_a_retryable_failure_without_its_text() -> None:
    try:
        raise ValueError("Newline in header value: Authorization: Bearer sk_live_secret")
    except ValueError as exc:
        error = unexpected(exc, _delivery())
    assert isinstance(error, RetryableError)
    assert str(error) == UNEXPECTED_ERROR
    assert "secret" not in str(error)


async def test_the_recorder_retries_a_refused_write_then_gives_up() -> None:
    producer = Producer(failures=2)
    await _recorder(producer).dead_letter(_delivery(), "x")
    assert producer.topics() == ["deliveries.dlq"]
    producer = Producer(failures=100_000)
    with pytest.raises(RecorderUnavailable):
        await _recorder(producer).dead_letter(_delivery(), "x")
    assert producer.failures > 100_000 - 50  # it gave up at its deadline, backing off
    # A fatal refusal (the idempotent producer lost its sequence) is not tried again.
    producer = Producer(failures=5, error=OutOfOrderSequenceNumber)
    with pytest.raises(RecorderUnavailable):
        await _recorder(producer).dead_letter(_delivery(), "x")
    assert producer.failures == 4
    # A send that timed out (a broker restarting) is tried again, not a reason to stop.
    producer = Producer(failures=3, error=KafkaTimeoutError)
    await _recorder(producer).dead_letter(_delivery(), "x")
    assert producer.topics() == ["deliveries.dlq"]


async def test_a_producer_whose_state_the_broker_lost_is_replaced_once() -> None:
    """After a broker restart the idempotent producer's sequence is refused for good: the
    recorder takes a new producer (once, however many sends were refused) and sends again."""
    broken, fresh, renewals = Producer(failures=5, error=OutOfOrderSequenceNumber), Producer(), []

    async def renew() -> Any:
        renewals.append(fresh)
        await asyncio.sleep(0)  # starting a producer yields; the other sends wait for it
        return fresh

    recorder = AttemptRecorder(
        broken,
        "herald-due-ms",
        give_up_s=0.05,
        send_backoff_s=0.01,
        renew=renew,  # type: ignore[arg-type]
    )
    await asyncio.gather(*(recorder.dead_letter(_delivery(), "x") for _ in range(5)))
    assert len(renewals) == 1
    assert fresh.topics() == ["deliveries.dlq"] * 5
    assert broken.sent == []


def test_a_tracker_stalls_at_its_bound_and_resumes_at_half() -> None:
    tracker = PartitionTracker(max_unfinished=10)
    for offset in range(10):
        tracker.add(offset)
        assert tracker.stall() is (offset == 9)
    assert tracker.stalled and not tracker.stall()  # said once
    # Offset 0 is stuck; the finished ones behind it keep counting until it finishes.
    assert not any(tracker.done(offset) for offset in range(1, 10))
    assert tracker.committable() == 0
    assert tracker.done(0) is True
    assert not tracker.stalled and tracker.committable() == 10
    unbounded = PartitionTracker()
    for offset in range(1000):
        unbounded.add(offset)
    assert not unbounded.stall()


async def test_a_commit_refused_after_a_rebalance_does_not_end_the_runner() -> None:
    from aiokafka import TopicPartition

    from pipeline.delivery import DeliveryRunner
    from pipeline.settings import Settings

    class Consumer:
        def assignment(self) -> set[TopicPartition]:
            return {TopicPartition("deliveries", 0)}

        async def commit(self, offsets: Any) -> None:
            raise CommitFailedError("rebalanced")

    runner = DeliveryRunner(Settings(), None, _recorder(Producer()), None)  # type: ignore[arg-type]
    runner._consumer = Consumer()
    runner._trackers[TopicPartition("deliveries", 0)].add(5)
    await runner.commit()  # logged, not raised


async def test_the_runner_pauses_a_partition_whose_tracker_is_full_and_says_so() -> None:
    from aiokafka import TopicPartition
    from prometheus_client import REGISTRY

    from pipeline.delivery import DeliveryRunner
    from pipeline.settings import Settings

    tp = TopicPartition("deliveries", 0)

    class Consumer:
        def __init__(self) -> None:
            self.paused: set[TopicPartition] = set()

        def assignment(self) -> set[TopicPartition]:
            return {tp}

        def pause(self, partition: TopicPartition) -> None:
            self.paused.add(partition)

        def resume(self, partition: TopicPartition) -> None:
            self.paused.discard(partition)

    settings = Settings(sink_max_unfinished_per_partition=4)
    runner = DeliveryRunner(settings, None, _recorder(Producer()), None)  # type: ignore[arg-type]
    consumer = runner._consumer = Consumer()  # type: ignore[assignment]
    tracker = runner._trackers[tp]
    for offset in range(4):
        tracker.add(offset)
    assert tracker.stall()
    runner._stall(tp, tracker)
    runner.observe_backlog()
    assert consumer.paused == {tp}
    assert REGISTRY.get_sample_value("herald_delivery_partitions_stalled") == 1
    for offset in (1, 2, 3):  # finished behind the stuck offset 0: still paused
        runner._finished(tp, offset)
    assert consumer.paused == {tp}
    runner._finished(tp, 0)
    runner.observe_backlog()
    assert consumer.paused == set()
    assert REGISTRY.get_sample_value("herald_delivery_partitions_stalled") == 0


@pytest.mark.parametrize("producer_failures", [0, 100])
async def test_a_delivery_finishes_unless_its_outcome_cannot_be_recorded(
    producer_failures: int,
) -> None:
    """A sink raising something unexpected still ends in a recorded failure and a finished
    offset; a broker refusing the record leaves the offset unfinished and stops the runner."""
    from aiokafka import TopicPartition
    from aiokafka.structs import ConsumerRecord

    from pipeline.delivery import DeliveryRunner
    from pipeline.settings import Settings

    class View:
        def get(self, *_: Any) -> dict[str, Any]:
            return _destination()

    class Publisher:
        async def publish(self, delivery_id: str, event: Any, body: bytes) -> None:
            raise ValueError("Newline or carriage return character detected in header value")

    class Publishers:
        async def get(self, destination: dict[str, Any]) -> Publisher:
            return Publisher()

    producer = Producer(failures=producer_failures)
    runner = DeliveryRunner(Settings(), View(), _recorder(producer), Publishers())  # type: ignore[arg-type]
    tp = TopicPartition("deliveries", 0)
    runner._trackers[tp].add(7)
    record = ConsumerRecord(
        "deliveries", 0, 7, 0, 0, b"evtd_1", delivery_record.encode(_delivery()), None, 0, 0, []
    )
    runner._dispatcher.arrived(tp, record)
    await _drained(runner._dispatcher.tasks)
    if producer_failures:
        assert runner._trackers[tp].committable() == 7
        assert isinstance(runner._dispatcher.failure, RecorderUnavailable)
    else:
        assert runner._trackers[tp].committable() == 8
        attempt = next(r for t, r, _ in producer.sent if t == "delivery-attempts")
        assert (attempt["outcome"], attempt["error"]) == ("failed", UNEXPECTED_ERROR)
        assert retry_topic(1) in producer.topics()
