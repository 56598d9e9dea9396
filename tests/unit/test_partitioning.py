"""The remembering partitioner picks exactly the partitions aiokafka's default does."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from pipeline.partitioning import CachedPartitioner


@given(
    keys=st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=50),
    count=st.integers(min_value=1, max_value=64),
)
def test_the_same_partition_as_the_default_every_time(keys: list[bytes], count: int) -> None:
    partitioner = CachedPartitioner(capacity=8)
    partitions = list(range(count))
    for key in keys + keys:  # the second time from memory (or computed again past capacity)
        assert partitioner(key, partitions, partitions) == DefaultPartitioner()(
            key, partitions, partitions
        )


def test_a_partition_count_change_is_a_new_answer() -> None:
    partitioner = CachedPartitioner()
    key = b"acme/evtd_1"
    assert partitioner(key, list(range(12)), []) == DefaultPartitioner()(key, list(range(12)), [])
    assert partitioner(key, list(range(7)), []) == DefaultPartitioner()(key, list(range(7)), [])
