"""The delivery runner commits an offset only when it moved: an idle runner sends nothing."""

from __future__ import annotations

from aiokafka import TopicPartition

from pipeline.attempts import AttemptRecorder
from pipeline.delivery import DeliveryRunner
from pipeline.settings import Settings

DELIVERIES_0 = TopicPartition("deliveries", 0)
DELIVERIES_1 = TopicPartition("deliveries", 1)


class Consumer:
    """Owns two partitions and remembers every commit it was asked for."""

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {DELIVERIES_0, DELIVERIES_1}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def _runner(consumer: Consumer) -> DeliveryRunner:
    recorder = AttemptRecorder(None, "herald-due-ms", give_up_s=0.05)
    runner = DeliveryRunner(Settings(), None, recorder, None)  # type: ignore[arg-type]
    runner._consumer = consumer
    return runner


async def test_an_unchanged_offset_is_not_committed_again() -> None:
    consumer = Consumer()
    runner = _runner(consumer)
    for offset in (5, 6):
        runner._trackers[DELIVERIES_0].add(offset)
    runner._trackers[DELIVERIES_1].add(9)
    await runner.commit()
    # Nothing finished: each partition's committable offset is its lowest unfinished.
    assert consumer.commits == [{DELIVERIES_0: 5, DELIVERIES_1: 9}]
    await runner.commit()
    assert len(consumer.commits) == 1  # nothing moved, nothing sent
    runner._trackers[DELIVERIES_0].done(5)
    await runner.commit()
    assert consumer.commits[-1] == {DELIVERIES_0: 6}  # only the partition that moved


async def test_a_partition_taken_back_after_a_rebalance_is_committed_afresh() -> None:
    consumer = Consumer()
    runner = _runner(consumer)
    runner._trackers[DELIVERIES_0].add(5)
    await runner.commit()
    runner.forget([DELIVERIES_0])  # revoked: another worker may have committed meanwhile
    runner._trackers[DELIVERIES_0].add(5)
    await runner.commit()
    assert consumer.commits == [{DELIVERIES_0: 5}, {DELIVERIES_0: 5}]
