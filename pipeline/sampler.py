"""The sampler of the gauges that describe shared state rather than count events.

Consumer lag, DLQ records and destinations are the same whichever process asks, so only
the router role samples them (pipeline/worker.py): a dashboard sees one copy per router
process, not one per delivering process. A delivering process sets its own gauges (its
retry backlog, its lanes) itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from pipeline import metrics
from pipeline.delivery import sink_group_id, sink_topics
from pipeline.settings import Settings
from pipeline.topics import ATTEMPTS, DELIVERIES, DESTINATION_CHANGES, DLQ, EVENTS, load_specs
from pipeline.view import DestinationView


def committed_lag(
    partitions: Iterable[TopicPartition],
    ends: Mapping[TopicPartition, int],
    starts: Mapping[TopicPartition, int],
    committed: Mapping[TopicPartition, OffsetAndMetadata],
) -> int:
    """Records past a group's committed offsets; a partition it never committed counts from
    its beginning (every Herald group starts from the earliest record)."""
    lag = 0
    for tp in partitions:
        meta = committed.get(tp)
        position = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
        lag += max(0, ends[tp] - position)
    return lag


class MetricsSampler:
    """Sets the gauges of shared state: consumer lag, DLQ records, destinations.

    Lag is the consumer group's, from its committed offsets (what kafka-consumer-groups
    shows), so it covers every member of every process, Faust's agents included, and
    counts a record as lagging until it is finished, not just fetched. End offsets are
    asked on a client of its own, not on a consumer that long-polls.
    """

    def __init__(self, settings: Settings, view: DestinationView) -> None:
        self._settings = settings
        self._view = view
        app_id = settings.app_id
        self._groups = {
            "agents": (app_id, [EVENTS, DESTINATION_CHANGES]),  # Faust's group is the app id
            "sinks": (sink_group_id(settings), sink_topics(settings)),
            "indexer": (f"{app_id}-indexer", [EVENTS, DELIVERIES, ATTEMPTS]),  # pipeline.indexer
        }
        partitions = {s.name: s.partitions for s in load_specs(settings.topics_file)}
        topics = sorted({t for _, names in self._groups.values() for t in names} | {DLQ})
        # A topic missing from topics.yaml has no partitions here (never a crash in metrics).
        self._by_topic = {
            t: [TopicPartition(t, p) for p in range(partitions.get(t, 0))] for t in topics
        }
        self._offsets: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    async def start(self) -> None:
        """Connect the offsets client and the admin client."""
        client_id = f"{self._settings.app_id}-metrics"
        self._offsets = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap, group_id=None, client_id=client_id
        )
        await self._offsets.start()
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self._settings.kafka_bootstrap, client_id=client_id
        )
        await self._admin.start()

    async def stop(self) -> None:
        """Close both clients."""
        if self._admin is not None:
            await self._admin.close()
        if self._offsets is not None:
            await self._offsets.stop()

    async def sample(self) -> None:
        """Set every sampled gauge once."""
        metrics.observe_destinations(self._view.counts())
        await self._sample_offsets()

    async def _sample_offsets(self) -> None:
        assert self._offsets is not None and self._admin is not None
        partitions = [tp for tps in self._by_topic.values() for tp in tps]
        ends = await self._offsets.end_offsets(partitions)
        starts = await self._offsets.beginning_offsets(partitions)
        metrics.DLQ_RECORDS.set(sum(ends[tp] - starts[tp] for tp in self._by_topic[DLQ]))
        for consumer, (group, topics) in self._groups.items():
            committed = await self._admin.list_consumer_group_offsets(group)
            for topic in topics:
                lag = committed_lag(self._by_topic[topic], ends, starts, committed)
                metrics.CONSUMER_LAG.labels(consumer=consumer, topic=topic).set(lag)
