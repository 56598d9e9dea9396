"""The delivery runner's dispatcher against stand-ins for Kafka and the sink: a delivery's
slot is free once the sink answers, its offset only once its record is acknowledged, and
what the circuit and the view say decides whether it is attempted at all."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord, TopicPartition

from pipeline import delivery_record, policy
from pipeline.attempts import AttemptRecorder
from pipeline.dispatch import Dispatcher
from pipeline.ids import ref_of_delivery
from pipeline.settings import Settings
from pipeline.sinks.base import DeliveryResult, RetryableError
from pipeline.topics import ATTEMPTS, retry_topic

TP = TopicPartition("deliveries", 0)


class Producer:
    """Holds every send until `acknowledge` (the broker's ack) unless `auto`."""

    def __init__(self, auto: bool = True) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.auto = auto
        self.acked = asyncio.Event()

    async def send_and_wait(self, topic: str, value: bytes, *, key: bytes, headers: Any) -> None:
        self.sent.append((topic, _decoded(value)))
        if not self.auto:
            await self.acked.wait()

    def topics(self) -> list[str]:
        return [topic for topic, _ in self.sent]


def _decoded(value: bytes) -> dict[str, Any]:
    """What a fake producer was given: a delivery record (retry tiers, DLQ) or JSON."""
    if value[:1] == delivery_record.VERSION:
        return delivery_record.decode(value)
    decoded: dict[str, Any] = orjson.loads(value)
    return decoded


class Publisher:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls = 0
        self.published: list[tuple[str, Any, bytes]] = []

    async def publish(self, delivery_id: str, event: Any, body: bytes) -> DeliveryResult:
        self.calls += 1
        self.published.append((delivery_id, event, body))
        if self.error is not None:
            raise self.error
        return DeliveryResult(response_status=200)


class Publishers:
    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    async def get(self, destination: dict[str, Any]) -> Publisher:
        return self.publisher


class View:
    def __init__(self, destination: dict[str, Any] | None) -> None:
        self.destination = destination

    def get(self, tenant: str, destination_id: str) -> dict[str, Any] | None:
        return self.destination

    async def generation_of(self, *_: Any) -> dict[str, Any] | None:
        return self.destination


DESTINATION = {
    "id": "evtd_1",
    "tenant": "t",
    "generation": "g1",
    "type": "webhook",
    "status": "active",
    "verified_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
}


def _envelope(offset: int) -> dict[str, Any]:
    return {"id": f"evt_{offset}", "type": "a.b", "data": {"n": offset}, "created_at": "x"}


def _record(offset: int, attempt: int = 0) -> ConsumerRecord[bytes, bytes]:
    envelope = _envelope(offset)
    head = {
        "id": f"evdl_{offset}",
        "event": {k: envelope[k] for k in delivery_record.EVENT_HEAD_KEYS},
        "tenant": "t",
        "destination_id": "evtd_1",
        "destination_generation": "g1",
        "attempt": attempt,
    }
    value = delivery_record.frame(head, orjson.dumps(envelope))
    return ConsumerRecord("deliveries", 0, offset, 0, 0, b"t/evtd_1", value, None, 0, 0, [])


def _dispatcher(
    producer: Producer,
    publisher: Publisher,
    destination: dict[str, Any] | None = DESTINATION,
    **settings: Any,
) -> tuple[Dispatcher, list[int]]:
    finished: list[int] = []
    recorder = AttemptRecorder(producer, "herald-due-ms", give_up_s=0.05)
    dispatcher = Dispatcher(
        Settings(**settings),
        View(destination),
        recorder,
        Publishers(publisher),
        lambda tp, offset: finished.append(offset),
    )
    return dispatcher, finished


async def _drained(dispatcher: Dispatcher) -> None:
    async with asyncio.timeout(5):
        while dispatcher.tasks:
            await asyncio.wait(set(dispatcher.tasks))


async def _until(condition: Any) -> None:
    """Let the dispatcher's tasks run until `condition` holds (at most 1,000 loop turns)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)  # one turn of the event loop, not a wait for time
    raise AssertionError("condition never held")


async def test_the_slot_is_free_when_the_sink_answers_and_the_offset_when_kafka_acks() -> None:
    producer, publisher = Producer(auto=False), Publisher()
    dispatcher, finished = _dispatcher(
        producer, publisher, sink_initial_in_flight_per_destination=1
    )
    for offset in range(3):
        dispatcher.arrived(TP, _record(offset))
    # One slot: yet all three reach the sink while the first record is not acknowledged.
    await _until(lambda: publisher.calls == 3)
    assert finished == []
    assert producer.topics().count(ATTEMPTS) == 3
    producer.acked.set()
    await _drained(dispatcher)
    assert sorted(finished) == [0, 1, 2]


async def test_an_open_circuit_moves_a_delivery_along_its_schedule_without_an_attempt() -> None:
    producer = Producer()
    publisher = Publisher(RetryableError("connection failed: connection refused"))
    dispatcher, finished = _dispatcher(
        producer,
        publisher,
        circuit_failure_threshold=2,
        sink_initial_in_flight_per_destination=1,
    )
    for offset in range(5):
        dispatcher.arrived(TP, _record(offset))
    await _drained(dispatcher)
    assert publisher.calls == 2  # the two that opened the circuit
    assert sorted(finished) == list(range(5))
    attempts = [r for t, r in producer.sent if t == ATTEMPTS]
    skipped = [a for a in attempts if a["error"].startswith("not attempted")]
    assert len(skipped) == 3
    # Each skipped one went on to its next tier as attempt 1: one record each, no more.
    retries = [r for t, r in producer.sent if t == retry_topic(1)]
    assert len(retries) == 5 and {r["attempt"] for r in retries} == {1}


async def test_a_delivery_to_a_deleted_destination_is_canceled_not_attempted() -> None:
    producer, publisher = Producer(), Publisher()
    dispatcher, finished = _dispatcher(producer, publisher, destination=None)
    dispatcher.arrived(TP, _record(0))
    await _drained(dispatcher)
    assert publisher.calls == 0 and finished == [0]
    [(topic, attempt)] = producer.sent
    assert (topic, attempt["outcome"], attempt["error"]) == (
        ATTEMPTS,
        "canceled",
        "destination deleted",
    )


async def test_a_malformed_record_is_skipped_and_the_partition_moves_on() -> None:
    producer, publisher = Producer(), Publisher()
    dispatcher, finished = _dispatcher(producer, publisher)
    bad = ConsumerRecord("deliveries", 0, 9, 0, 0, b"k", b"{not json", None, 0, 0, [])
    dispatcher.arrived(TP, bad)
    assert finished == [9] and producer.sent == []


async def test_a_slow_lane_beyond_its_wait_bound_is_put_off_without_using_a_retry() -> None:
    producer = Producer()
    never = asyncio.Event()

    class Stuck(Publisher):
        async def publish(self, delivery_id: str, event: Any, body: bytes) -> DeliveryResult:
            self.calls += 1
            await never.wait()  # a receiver that does not answer (until the test ends)
            return DeliveryResult(response_status=200)

    publisher = Stuck()
    dispatcher, finished = _dispatcher(
        producer, publisher, sink_initial_in_flight_per_destination=2, sink_max_queue_wait_s=1
    )
    ref = ref_of_delivery(delivery_record.decode(_record(0).value))
    for offset in range(2):
        dispatcher.arrived(TP, _record(offset))
    await _until(lambda: publisher.calls == 2)
    lane = dispatcher._lanes._lanes[ref]
    for job in lane.in_flight:  # the two in flight have run for 10 s
        lane.in_flight[job] -= 10
    dispatcher.arrived(TP, _record(2))
    await _until(lambda: finished == [2])
    [(topic, record)] = producer.sent
    assert topic.startswith("deliveries.retry.") and record["attempt"] == 0
    never.set()
    await _drained(dispatcher)


async def test_only_the_first_skip_in_a_row_and_the_dead_letter_reach_the_attempt_log() -> None:
    producer = Producer()
    publisher = Publisher(RetryableError("connection failed: connection refused"))
    dispatcher, finished = _dispatcher(
        producer, publisher, circuit_failure_threshold=1, max_retries=3
    )
    dispatcher.arrived(TP, _record(0))  # fails for real: opens the circuit
    await _drained(dispatcher)
    producer.sent.clear()
    retried = delivery_record.decode(_record(1, attempt=1).value)
    again = {**retried, "skipped": True}
    last = {**retried, "attempt": 3, "skipped": True}
    for offset, delivery in ((1, retried), (2, again), (3, last)):
        value = delivery_record.encode(delivery)
        record = ConsumerRecord("deliveries", 0, offset, 0, 0, b"k", value, None, 0, 0, [])
        dispatcher.arrived(TP, record)
    await _drained(dispatcher)
    assert sorted(finished) == [0, 1, 2, 3]
    attempts = [r["delivery_id"] for t, r in producer.sent if t == ATTEMPTS]
    assert attempts == ["evdl_1", "evdl_1"]  # the first skip, and the dead letter
    chained = [(t, r.get("skipped")) for t, r in producer.sent if t != ATTEMPTS]
    assert chained == [(retry_topic(2), True), (retry_topic(2), True), ("deliveries.dlq", True)]


async def test_a_record_missing_fields_never_stops_the_consume_loop() -> None:
    producer, publisher = Producer(), Publisher()
    dispatcher, finished = _dispatcher(producer, publisher)
    partial = {"tenant": "t", "destination_id": "evtd_1", "destination_generation": "g1"}
    record = ConsumerRecord("deliveries", 0, 4, 0, 0, b"k", orjson.dumps(partial), None, 0, 0, [])
    dispatcher.arrived(TP, record)  # raises nothing
    await _drained(dispatcher)
    assert finished == [4] and publisher.calls == 0


async def test_the_sink_gets_the_routed_body_as_is_and_a_json_record_still_delivers() -> None:
    """The body the router encoded goes out byte for byte; a record written before the
    framed format (one JSON object, the event whole) is delivered with the same body."""
    producer, publisher = Producer(), Publisher()
    dispatcher, finished = _dispatcher(producer, publisher)
    dispatcher.arrived(TP, _record(0))
    legacy = {
        **delivery_record.decode(_record(1).value),
        "event": {**_envelope(1), "object": "event"},
    }
    del legacy[delivery_record.BODY]
    value = orjson.dumps(legacy)
    dispatcher.arrived(TP, ConsumerRecord("deliveries", 0, 1, 0, 0, b"k", value, None, 0, 0, []))
    await _drained(dispatcher)
    assert sorted(finished) == [0, 1]
    assert [(d, e, b) for d, e, b in publisher.published] == [
        ("evdl_0", {"id": "evt_0", "type": "a.b", "created_at": "x"}, orjson.dumps(_envelope(0))),
        (
            "evdl_1",
            {"id": "evt_1", "type": "a.b", "created_at": "x"},
            orjson.dumps(legacy["event"]),
        ),
    ]
    attempts = [r for t, r in producer.sent if t == ATTEMPTS]
    assert [(a["event_id"], a["outcome"]) for a in attempts] == [
        ("evt_0", "success"),
        ("evt_1", "success"),
    ]


class CatchingUpView(View):
    """A view that reads an enable (the destination active again) when it syncs."""

    def __init__(self) -> None:
        super().__init__({**DESTINATION, "status": "inactive"})
        self.syncs = 0

    async def sync(self, timeout_s: float) -> None:
        self.syncs += 1
        self.destination = DESTINATION


async def test_a_restarted_delivery_to_a_destination_inactive_in_this_view_waits_for_it() -> None:
    """A recovery right after an enable: this worker's view may not have read the enable."""
    producer, publisher = Producer(), Publisher()
    dispatcher, finished = _dispatcher(producer, publisher)
    view = CatchingUpView()
    dispatcher._view = view  # type: ignore[assignment]
    restarted = delivery_record.decode(_record(0).value)
    restarted[policy.RESTARTED] = True
    value = delivery_record.encode(restarted)
    dispatcher.arrived(TP, ConsumerRecord("deliveries", 0, 0, 0, 0, b"k", value, None, 0, 0, []))
    await _drained(dispatcher)
    assert (publisher.calls, view.syncs, finished) == (1, 1, [0])
    # A routed one (no flag) is canceled at once, as before: no look-up per delivery.
    view = CatchingUpView()
    dispatcher._view = view  # type: ignore[assignment]
    dispatcher.arrived(TP, _record(1))
    await _drained(dispatcher)
    assert (publisher.calls, view.syncs, finished) == (1, 0, [0, 1])
