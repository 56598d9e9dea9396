"""The worker's Faust consumer rewinds stream partitions that have no committed offset, reads
no stream partition while rebalancing, and hands records over without a task each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from faust import App
from faust.types import TP

from pipeline.app import create_app
from pipeline.faust_kafka import Consumer
from pipeline.settings import Settings


class FakeThread:
    """Stands in for Faust's consumer thread (the aiokafka consumer behind it)."""

    def __init__(self, committed: dict[TopicPartition, int | None]) -> None:
        self.committed = committed
        self.rewound: list[TopicPartition] = []

    async def seek_to_committed(self) -> dict[TopicPartition, int | None]:
        return self.committed

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self.rewound.extend(partitions)


async def test_partitions_without_a_committed_offset_go_back_to_their_beginning(
    tmp_path: Any,
) -> None:
    app = create_app(Settings(worker_data_dir=tmp_path))
    consumer = app.consumer
    assert isinstance(consumer, Consumer)
    committed = {
        TopicPartition("events", 0): None,  # taken over from a worker killed before it committed
        TopicPartition("events", 1): 0,  # aiokafka does not seek to 0 either
        TopicPartition("events", 2): 17,  # aiokafka seeks there itself
        TopicPartition("destination-changes", 0): None,
        TopicPartition("destinations", 0): None,  # changelogs: table recovery's business
        TopicPartition("event-ids", 0): None,
    }
    # The real consumer thread made an event loop of its own: close it, it never runs.
    consumer._thread.thread_loop.close()
    thread = FakeThread(committed)
    consumer._thread = thread  # type: ignore[assignment]

    assert await consumer.seek_to_committed() == committed
    assert sorted(thread.rewound) == [
        TopicPartition("destination-changes", 0),
        TopicPartition("events", 0),
        TopicPartition("events", 1),
    ]


class RecordingThread:
    """Records the partitions each fetch asks for."""

    def __init__(self) -> None:
        self.asked: list[set[TP]] = []

    async def getmany(self, active_partitions: set[TP], *_: Any) -> dict[TP, Any]:
        self.asked.append(active_partitions)
        return {}


async def test_no_stream_partition_is_fetched_while_rebalancing(tmp_path: Any) -> None:
    app = create_app(Settings(worker_data_dir=tmp_path))
    consumer = app.consumer
    consumer._thread.thread_loop.close()
    thread = RecordingThread()
    consumer._thread = thread  # type: ignore[assignment]
    events, changelog = TP("events", 0), TP("destinations", 0)
    active = {events, changelog}

    app.rebalancing = True
    await consumer._getmany(active, 1.0)  # table recovery reads its changelogs only
    await consumer._getmany({events}, 0.01)  # nothing else: not even asked
    app.rebalancing = False
    await consumer._getmany(active, 1.0)

    assert thread.asked == [{changelog}, {events, changelog}]
    assert thread.asked[-1] is not active  # a copy: Faust updates its set in place


async def _fetched(tp: TP, offsets: list[int]) -> AsyncIterator[tuple[TP, Any]]:
    for offset in offsets:
        yield tp, SimpleNamespace(offset=offset)


def _recording_consumer(app: App) -> tuple[Consumer, list[tuple[int, asyncio.Task[Any] | None]]]:
    """The app's consumer with a callback that records each offset and the task it ran in."""
    consumer = app.consumer
    assert isinstance(consumer, Consumer)
    consumer._thread.thread_loop.close()
    handed: list[tuple[int, asyncio.Task[Any] | None]] = []

    async def callback(message: Any) -> None:
        handed.append((message.offset, asyncio.current_task()))

    consumer.callback = callback
    return consumer, handed


async def test_records_are_handed_over_in_the_fetch_loop_itself(tmp_path: Any) -> None:
    app = create_app(Settings(worker_data_dir=tmp_path))
    consumer, handed = _recording_consumer(app)
    app.flow_control.resume()  # as after the first assignment
    tp = TP("events", 0)

    await consumer._hand_over(_fetched(tp, [3, 4, 5]))
    await consumer._hand_over(_fetched(tp, [4, 6]))  # 4 was read already: dropped

    assert handed == [(offset, asyncio.current_task()) for offset in (3, 4, 5, 6)]
    assert consumer._read_offset[tp] == 6


async def test_a_hand_over_that_could_wait_is_raced_against_a_rebalance(tmp_path: Any) -> None:
    app = create_app(Settings(worker_data_dir=tmp_path))
    consumer, handed = _recording_consumer(app)
    tp = TP("events", 0)

    # Flow control suspended (before the first assignment, or during a rebalance): the
    # conductor would wait, so the hand-over runs in a task of its own, as Faust does it.
    await consumer._hand_over(_fetched(tp, [0]))

    assert [offset for offset, _ in handed] == [0]
    assert handed[0][1] is not asyncio.current_task()
    assert consumer._read_offset[tp] == 0
