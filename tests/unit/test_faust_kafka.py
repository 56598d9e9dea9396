"""The worker's Faust consumer rewinds stream partitions that have no committed offset."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition
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
