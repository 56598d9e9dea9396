"""Kafka's default partitioner with its answers remembered, for keys that repeat.

Every record about a delivery is keyed `tenant/destination id`, so the worker's producers
send the same few keys over and over, and aiokafka's partitioner hashes each one again in
pure Python (murmur2: a few percent of the worker's CPU under load). The partition of a
key depends only on the key and the partition count, so it is computed once per pair.
"""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

# Distinct (key, partition count) pairs remembered; past it the memory starts again.
CAPACITY = 100_000


class CachedPartitioner:
    """A drop-in `partitioner=` for AIOKafkaProducer (and Faust's `producer_partitioner`)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._default = DefaultPartitioner()
        self._partitions: dict[tuple[bytes, int], int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        """The partition for `key`, exactly as DefaultPartitioner picks it."""
        if key is None:
            return int(self._default(key, all_partitions, available))
        pair = (key, len(all_partitions))
        partition = self._partitions.get(pair)
        if partition is None:
            if len(self._partitions) >= self._capacity:
                self._partitions.clear()
            partition = int(self._default(key, all_partitions, available))
            self._partitions[pair] = partition
        return partition
