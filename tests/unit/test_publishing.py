"""publish_each: per event, whether the broker confirmed it (issue 12, B10); a batch goes as
one record batch per partition, deduplicated ids to their key's partition (issue 14)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, RequestTimedOutError
from aiokafka.partitioner import DefaultPartitioner

from api.publishing import SEND_ONE_BY_ONE_AT_MOST, encode, publish_each

PARTITIONS = {0, 1, 2}


class _View:
    async def stamp(self) -> dict[int, int]:
        return {0: 7}


def _future(names: list[str]) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    if any(name.startswith("lost") for name in names):
        future.set_exception(RequestTimedOutError())
    else:
        future.set_result(None)
    return future


class _Builder:
    """Holds up to 4 records; a 'big' one fits nowhere."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.values: list[bytes] = []
        self.closed = False

    def append(
        self, *, key: bytes, value: bytes, timestamp: None, headers: Any = ()
    ) -> object | None:
        if self.closed or key.startswith(b"big") or len(self.names) == 4:
            self.closed = True
            return None
        self.names.append(key.decode())
        self.values.append(value)
        return object()

    def close(self) -> None:
        self.closed = True


class _Producer:
    """Sends fail as told: 'big' does not fit, 'lost' is not acknowledged (with the rest of
    its batch), 'down' refuses the send and stops the rest."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.partition_of: dict[str, int] = {}
        self.batches: list[list[str]] = []
        self.values: list[bytes] = []
        self.gate: asyncio.Event | None = None  # set: send_batch waits for it

    async def partitions_for(self, topic: str) -> set[int]:
        return PARTITIONS

    async def send(
        self, topic: str, value: bytes, key: bytes, partition: int, headers: Any = None
    ) -> asyncio.Future[Any]:
        name = key.decode()
        if name.startswith("big"):
            raise MessageSizeTooLargeError()
        if name.startswith("down"):
            raise KafkaTimeoutError()
        self.sent.append(name)
        self.partition_of[name] = partition
        self.values.append(value)
        return _future([name])

    def create_batch(self) -> _Builder:
        return _Builder()

    async def send_batch(self, batch: _Builder, topic: str, *, partition: int) -> Any:
        assert batch.closed, "a batch is closed before it is handed over"
        if self.gate is not None:
            await self.gate.wait()
        if any(name.startswith("down") for name in batch.names):
            raise KafkaTimeoutError()
        self.sent += batch.names
        self.batches.append(batch.names)
        self.values += batch.values
        for name in batch.names:
            self.partition_of[name] = partition
        return _future(batch.names)


def _events(*names: str, deduplicate: bool = False) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"id": name, "type": "t.t", "data": {}} for name in names]
    for event in events:
        if deduplicate:
            event["deduplicate"] = True
    return events


async def test_each_event_has_its_own_outcome() -> None:
    producer = _Producer()
    outcomes = await publish_each(_View(), producer, _events("a", "big1", "lost1", "b"))  # type: ignore[arg-type]
    assert [o is None for o in outcomes] == [True, False, False, True]
    assert sorted(producer.sent) == ["a", "b", "lost1"], "a too-large event fails alone"


async def test_a_broker_error_at_send_fails_the_rest_without_sending_them() -> None:
    producer = _Producer()
    outcomes = await publish_each(_View(), producer, _events("a", "down", "b", "c"))  # type: ignore[arg-type]
    assert outcomes[1] is not None
    assert sum(o is not None for o in outcomes) >= 1
    names = ["a", "down", "b", "c"]
    assert all((o is None) == (n in producer.sent) for n, o in zip(names, outcomes, strict=True))
    assert "down" not in producer.sent


async def test_a_batch_goes_as_record_batches_with_an_outcome_per_event() -> None:
    producer = _Producer()
    names = [f"e{i}" for i in range(30)] + ["big1", "lost1"]
    outcomes = await publish_each(_View(), producer, _events(*names))  # type: ignore[arg-type]
    assert len(names) > SEND_ONE_BY_ONE_AT_MOST
    by_name = dict(zip(names, outcomes, strict=True))
    assert isinstance(by_name["big1"], MessageSizeTooLargeError), "too large fails alone"
    [lost_batch] = [batch for batch in producer.batches if "lost1" in batch]
    failed = {name for name, outcome in by_name.items() if outcome is not None}
    assert failed == {"big1", *lost_batch}, "an unacknowledged batch fails its events only"
    assert all(len(batch) <= 4 for batch in producer.batches)
    assert len(producer.batches) <= 11, "one batch per partition until a batch is full"
    assert sorted(len(batch) for batch in producer.batches)[-1] == 4
    assert sorted(producer.sent) == sorted(n for n in names if n != "big1")


async def test_a_refused_batch_fails_its_events_only() -> None:
    producer = _Producer()
    names = [f"e{i}" for i in range(12)] + ["down"]
    outcomes = await publish_each(_View(), producer, _events(*names))  # type: ignore[arg-type]
    for name, outcome in zip(names, outcomes, strict=True):
        assert (outcome is None) == (name in producer.sent)
    assert "down" not in producer.sent
    assert sum(outcome is None for outcome in outcomes) >= 8


async def test_concurrent_batch_publishes_share_a_partitions_next_batch() -> None:
    producer = _Producer()
    producer.gate = asyncio.Event()
    first = asyncio.create_task(publish_each(_View(), producer, _events(*"abcdefghi")))  # type: ignore[arg-type]
    for _ in range(5):
        await asyncio.sleep(0)
    # The first batches wait for their turn; two more calls arrive meanwhile.
    second = asyncio.create_task(publish_each(_View(), producer, _events(*"jklmnopqr")))  # type: ignore[arg-type]
    third = asyncio.create_task(publish_each(_View(), producer, _events(*"stuvwxyz0")))  # type: ignore[arg-type]
    for _ in range(5):
        await asyncio.sleep(0)
    producer.gate.set()
    outcomes = await asyncio.gather(first, second, third)
    assert all(o is None for call in outcomes for o in call)
    later = set("jklmnopqrstuvwxyz0")
    shared = [batch for batch in producer.batches if later & set(batch)]
    assert any(set(batch) & set("jklmnopqr") and set(batch) & set("stuvwxyz0") for batch in shared)


async def test_deduplicated_events_go_to_their_keys_partition_others_are_spread() -> None:
    producer = _Producer()
    keyed = [f"evt_keyed{i}" for i in range(20)]
    await publish_each(_View(), producer, _events(*keyed, deduplicate=True))  # type: ignore[arg-type]
    partitions = sorted(PARTITIONS)
    for name in keyed:
        assert producer.partition_of[name] == DefaultPartitioner()(
            name.encode(), partitions, partitions
        )
    fresh = [f"evt_fresh{i}" for i in range(30)]
    await publish_each(_View(), producer, _events(*fresh))  # type: ignore[arg-type]
    counts = [sum(producer.partition_of[n] == p for n in fresh) for p in partitions]
    assert counts == [10, 10, 10]


async def test_the_record_is_the_event_with_its_stamp_spliced_in() -> None:
    producer = _Producer()
    event = {"id": "a", "type": "t.t", "data": orjson.Fragment(b'{"k":[1,"\\u00e9"]}')}
    await publish_each(_View(), producer, [event])  # type: ignore[arg-type]
    [value] = producer.values
    assert orjson.loads(value) == {
        "id": "a",
        "type": "t.t",
        "data": {"k": [1, "é"]},
        "route_after": {"0": 7},
    }
    assert encode({"id": "x"}, b"{}") == b'{"id":"x","route_after":{}}'
