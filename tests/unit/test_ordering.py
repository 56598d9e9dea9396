"""Ordered delivery per key, in the runner's dispatcher (with the stand-ins for Kafka and the
sink of test_dispatch) and at the API's edge: a key's next delivery is attempted only once
the previous one succeeded or was dead-lettered, a failing head retries in place (never
through a retry tier), and other keys go past it."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition

from api.errors import RequestValidationError
from api.publishing import _KEY_PARTITIONER, _partition_of, _Partitions
from api.validation import create_destination, publish_event, update_destination
from pipeline import delivery_record
from pipeline.attempts import AttemptRecorder
from pipeline.dispatch import Dispatcher
from pipeline.lanes import Job
from pipeline.ordering import KeyLines
from pipeline.settings import Settings
from pipeline.sinks.base import DeliveryResult, PermanentError, RetryableError
from pipeline.topics import ATTEMPTS, DLQ
from tests.support import eventually
from tests.unit.test_dispatch import (
    DESTINATION,
    TP,
    Producer,
    Publisher,
    Publishers,
    View,
    _dispatcher,
    _drained,
    _record,
)

ORDERED = {**DESTINATION, "ordering": "per_key"}


def _keyed(offset: int, key: str | None) -> ConsumerRecord[bytes, bytes]:
    """test_dispatch's delivery record at `offset`, its event published with `key`."""
    record = _record(offset)
    delivery = delivery_record.decode(record.value)
    if key is not None:
        delivery[delivery_record.ORDERING_KEY] = key
    return dataclasses.replace(record, value=delivery_record.encode(delivery))


class Flaky(Publisher):
    """Fails the first `failures[id]` attempts of a delivery; remembers every call in order."""

    def __init__(self, failures: dict[str, int], error: Exception | None = None) -> None:
        super().__init__()
        self.failures = dict(failures)
        self.failure = error or RetryableError("503 from the receiver", response_status=503)
        self.log: list[tuple[str, str]] = []  # (delivery id, "ok" | "failed")

    async def publish(self, delivery_id: str, event: Any, body: bytes) -> DeliveryResult:
        self.calls += 1
        if self.failures.get(delivery_id, 0) > 0:
            self.failures[delivery_id] -= 1
            self.log.append((delivery_id, "failed"))
            raise self.failure
        self.log.append((delivery_id, "ok"))
        return DeliveryResult(response_status=200)


def _first_tries_in_order(log: list[tuple[str, str]], ids: list[str]) -> None:
    """Each of `ids` is first tried only after the one before it succeeded."""
    for earlier, later in itertools.pairwise(ids):
        first_try = next(i for i, (d, _) in enumerate(log) if d == later)
        success = log.index((earlier, "ok"))
        assert success < first_try, f"{later} tried before {earlier} succeeded: {log}"


async def test_a_failing_head_holds_only_its_key_and_retries_in_place() -> None:
    producer = Producer()
    publisher = Flaky({"evdl_0": 2, "evdl_3": 1})
    dispatcher, finished = _dispatcher(
        producer, publisher, ORDERED, retry_base_delay_s=0.02, max_retries=5
    )
    keys = ["k", "j", "j", "k", "k", "j", None]  # offset 6 has no key: never held
    for offset, key in enumerate(keys):
        dispatcher.arrived(TP, _keyed(offset, key))
    await eventually(lambda: len(finished) == len(keys), timeout_s=5, what="all finished")
    await _drained(dispatcher)
    _first_tries_in_order(publisher.log, ["evdl_0", "evdl_3", "evdl_4"])
    _first_tries_in_order(publisher.log, ["evdl_1", "evdl_2", "evdl_5"])
    # Key j and the unkeyed delivery went past k's failing head.
    assert publisher.log.index(("evdl_5", "ok")) < publisher.log.index(("evdl_0", "ok"))
    assert publisher.log.index(("evdl_6", "ok")) < publisher.log.index(("evdl_0", "ok"))
    # Retried in place: attempts recorded, no retry tier written, attempt numbers counted.
    assert {topic for topic, _ in producer.sent} == {ATTEMPTS}
    head = [(r["attempt"], r["outcome"]) for _, r in producer.sent if r["delivery_id"] == "evdl_0"]
    assert head == [(0, "failed"), (1, "failed"), (2, "success")]


async def test_a_dead_lettered_head_lets_the_next_one_go() -> None:
    producer = Producer()
    publisher = Flaky({"evdl_0": 1}, PermanentError("400 from the receiver", response_status=400))
    dispatcher, finished = _dispatcher(producer, publisher, ORDERED, retry_base_delay_s=0.02)
    for offset in range(3):
        dispatcher.arrived(TP, _keyed(offset, "k"))
    await eventually(lambda: len(finished) == 3, timeout_s=5, what="all finished")
    await _drained(dispatcher)
    assert [topic for topic, _ in producer.sent].count(DLQ) == 1
    assert [d for d, _ in publisher.log] == ["evdl_0", "evdl_1", "evdl_2"]


async def test_without_per_key_ordering_a_failure_goes_to_a_retry_tier_as_before() -> None:
    producer = Producer()
    publisher = Flaky({"evdl_0": 1})
    dispatcher, finished = _dispatcher(producer, publisher, retry_base_delay_s=0.02)
    for offset in range(3):
        dispatcher.arrived(TP, _keyed(offset, "k"))
    await _drained(dispatcher)
    assert sorted(finished) == [0, 1, 2]  # the failed one is finished: its retry is queued
    assert any(topic.startswith("deliveries.retry.") for topic, _ in producer.sent)
    assert publisher.log[1:] == [("evdl_1", "ok"), ("evdl_2", "ok")]


async def test_held_deliveries_stay_unfinished_until_their_turn() -> None:
    producer = Producer()
    publisher = Flaky({"evdl_0": 100})  # keeps failing while the test looks
    dispatcher, finished = _dispatcher(
        producer, publisher, ORDERED, retry_base_delay_s=60, max_retries=10
    )
    for offset in range(3):
        dispatcher.arrived(TP, _keyed(offset, "k"))
    await eventually(lambda: publisher.calls == 1, timeout_s=5, what="the first attempt")
    await _drained(dispatcher)
    # The head waits for its retry in place; nothing of the key is finished (a crash now
    # reads all three again, in order), and nothing else of the key was attempted.
    assert finished == [] and publisher.calls == 1
    dispatcher.forget([TP])  # revoked: the head's retry is not run here any more
    dispatcher.stop()
    assert dispatcher._lines.held == 0 and not dispatcher._again


async def test_a_delivery_catching_up_with_the_view_keeps_its_place_in_the_line() -> None:
    class CatchingUp(View):
        """A view that does not know the destination until the test says so."""

        def __init__(self) -> None:
            super().__init__(None)
            self.caught_up = asyncio.Event()

        async def generation_of(self, *_: Any) -> dict[str, Any] | None:
            await self.caught_up.wait()
            return self.destination

    view, producer, publisher = CatchingUp(), Producer(), Flaky({})
    finished: list[int] = []
    recorder = AttemptRecorder(producer, "herald-due-ms", give_up_s=0.05)
    dispatcher = Dispatcher(
        Settings(), view, recorder, Publishers(publisher), lambda tp, o: finished.append(o)
    )
    dispatcher.arrived(TP, _keyed(0, "k"))  # unknown to the view: it catches up first
    view.destination = ORDERED  # the view has it now...
    dispatcher.arrived(TP, _keyed(1, "k"))  # ...so this one could go at once, but waits
    for _ in range(100):
        await asyncio.sleep(0)  # turns of the event loop in which nothing may be attempted
    assert publisher.calls == 0 and finished == []
    view.caught_up.set()
    await eventually(lambda: finished == [0, 1], timeout_s=5, what="both, in order")
    assert [d for d, _ in publisher.log] == ["evdl_0", "evdl_1"]


def _job(partition: Any, offset: int) -> Job:
    return Job(partition, offset, {}, {}, "ref")


def test_dropping_a_revoked_partition_hands_the_line_to_what_is_left() -> None:
    lines = KeyLines()
    other = TopicPartition("deliveries.retry.1", 0)
    head, kept, gone = _job(TP, 0), _job(other, 5), _job(TP, 1)
    assert lines.join(head, ("ref", "k"))
    assert not lines.join(kept, ("ref", "k"))
    assert not lines.join(gone, ("ref", "k"))
    assert lines.held == 2
    assert lines.drop({TP}) == [kept]  # the head went with its partition
    assert lines.held == 0 and lines.ordered(kept) and not lines.ordered(head)
    assert lines.done(kept) is None


@pytest.mark.parametrize(
    "key",
    ["", "x" * 257, "é" * 129, "a\nb", "tab\there", 7, ["k"]],
)
def test_an_odd_ordering_key_is_a_400_naming_the_field(key: Any) -> None:
    with pytest.raises(RequestValidationError) as caught:
        publish_event({"type": "a.b", "data": {}, "ordering_key": key})
    assert list(caught.value.errors) == ["ordering_key"]


def test_an_ordering_key_of_256_bytes_is_accepted() -> None:
    assert publish_event({"type": "a.b", "data": {}, "ordering_key": "é" * 128})["ordering_key"]


def test_ordering_is_validated_on_create_and_patch() -> None:
    settings = Settings()
    body = {"name": "n", "webhook": {"url": "https://example.com/h"}, "events": ["*"]}
    assert create_destination(body, settings)["ordering"] == "none"
    assert create_destination({**body, "ordering": "per_key"}, settings)["ordering"] == "per_key"
    assert update_destination({"ordering": "per_key"}, "webhook", settings) == {
        "ordering": "per_key"
    }
    with pytest.raises(RequestValidationError) as caught:
        update_destination({"ordering": "fifo"}, "webhook", settings)
    assert list(caught.value.errors) == ["ordering"]


def test_a_keys_events_share_one_events_partition_whatever_their_ids() -> None:
    partitions, state = list(range(12)), _Partitions()
    keyed: list[dict[str, Any]] = [
        {"id": f"evt_{n}", "tenant": "t", "ordering_key": "order-42", "deduplicate": n % 2}
        for n in range(50)
    ]
    chosen = {_partition_of(e, e["id"].encode(), partitions, state) for e in keyed}
    assert chosen == {_KEY_PARTITIONER(b"t/order-42", partitions, partitions)}
    # Another tenant's same key is its own.
    other = {"id": "evt_x", "tenant": "u", "ordering_key": "order-42"}
    assert _partition_of(other, b"evt_x", partitions, state) == _KEY_PARTITIONER(
        b"u/order-42", partitions, partitions
    )
