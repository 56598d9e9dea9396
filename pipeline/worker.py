"""The worker's services beside the Faust agents: view, delivery runner, indexer, HTTP, and
the sampler of the metrics that describe state rather than count events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import asyncpg
import mode
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from pipeline import metrics
from pipeline.attempts import AttemptRecorder
from pipeline.crypto import Sealer
from pipeline.db import DATABASE_ERRORS, create_pool, migrate
from pipeline.delivery import DUE_HEADER, DeliveryRunner
from pipeline.health import health_routes
from pipeline.indexer import Indexer
from pipeline.partitioning import CachedPartitioner
from pipeline.publishers import PublisherCache
from pipeline.settings import Settings
from pipeline.sinks import aclose_all
from pipeline.supervision import exit_process
from pipeline.topics import ATTEMPTS, DELIVERIES, DESTINATION_CHANGES, DLQ, EVENTS, load_specs
from pipeline.view import DestinationView

log = logging.getLogger(__name__)

# How long a worker that gives up may take to stop cleanly before it just leaves.
GIVE_UP_STOP_S = 15.0
# How long a replaced producer may take to close.
PRODUCER_STOP_S = 5.0

# Below Prometheus' scrape interval (15 s in ops/prometheus/prometheus.yml); a sample costs
# eight broker requests (offsets, and each group's coordinator and committed offsets).
SAMPLE_INTERVAL_S = 10.0
PRUNE_INTERVAL_S = 10.0
INDEX_RETRY_MAX_S = 30.0


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
    """Sets the gauges of shared state: consumer lag, DLQ records, destinations, backlog.

    Lag is the consumer group's, from its committed offsets (what kafka-consumer-groups
    shows), so it covers every member, Faust's agents included, and counts a record as
    lagging until it is finished, not just fetched. Every worker reports the same numbers.
    End offsets are asked on a client of its own, not on a consumer that long-polls.
    """

    def __init__(self, settings: Settings, view: DestinationView, runner: DeliveryRunner) -> None:
        self._settings = settings
        self._view = view
        self._runner = runner
        app_id = settings.app_id
        self._groups = {
            "agents": (app_id, [EVENTS, DESTINATION_CHANGES]),  # Faust's group is the app id
            "sinks": (runner.group_id, runner.topics),
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
        self._runner.observe_backlog()
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


class WorkerServices(mode.Service):
    """Started by Faust once its tables have recovered; stopped before it shuts down."""

    settings: ClassVar[Settings]
    view: ClassVar[DestinationView]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        settings = self.settings
        self.producer = self._new_producer()
        self.publishers = PublisherCache(
            settings, Sealer(settings.encryption_keys.get_secret_value())
        )
        self.runner = DeliveryRunner(
            settings,
            self.view,
            AttemptRecorder(
                self.producer,
                DUE_HEADER,
                give_up_s=settings.broker_give_up_s,
                renew=self._renew_producer,
            ),
            self.publishers,
        )
        self.sampler = MetricsSampler(settings, self.view, self.runner)
        self._sampling_failed = False
        self.http: web.AppRunner | None = None
        self.pool: asyncpg.Pool | None = None
        self.indexer: Indexer | None = None
        self._index_start: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        """View first (routing and delivery read it), then delivery, index and HTTP."""
        settings = self.settings
        await self.view.start()
        await self.producer.start()
        await self.view.ready.wait()
        await self.runner.start(self._give_up)
        # Delivery never waits for the index: it starts once PostgreSQL answers, and
        # catches up from its committed offsets.
        self.pool = await create_pool(settings.database_url)
        self.indexer = Indexer(settings, self.pool)
        self._index_start = asyncio.create_task(self._start_index(), name="index-start")
        await self.sampler.start()
        http = web.Application()
        checks = {
            "kafka": self._kafka_ready,
            "database": self._database_ready,
            "delivery_loop": self._delivery_loop_alive,
            "index_loop": self._index_loop_alive,
        }
        # The index (PostgreSQL and its loop) may be down while delivery goes on.
        http.add_routes(health_routes(checks, degradable={"database", "index_loop"}))
        self.http = web.AppRunner(http, access_log=None)
        await self.http.setup()
        await web.TCPSite(self.http, settings.worker_host, settings.worker_port).start()

    async def on_stop(self) -> None:
        """Reverse order; in-flight deliveries get a moment to finish and commit."""
        if self.http is not None:
            await self.http.cleanup()
        await self.sampler.stop()
        if self._index_start is not None:
            self._index_start.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._index_start
        if self.indexer is not None:
            await self.indexer.stop()
        if self.pool is not None:
            await self.pool.close()
        await self.runner.stop()
        await self.publishers.aclose()
        await aclose_all()
        await self.producer.stop()
        await self.view.stop()

    async def _start_index(self) -> None:
        """Migrate and start the indexer as soon as PostgreSQL answers (retrying meanwhile)."""
        assert self.pool is not None and self.indexer is not None
        delay_s = 1.0
        while True:
            try:
                await migrate(self.pool)
                break
            except DATABASE_ERRORS as exc:
                log.warning("the index is unreachable (%s); delivering without it", exc)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, INDEX_RETRY_MAX_S)
        await self.indexer.start()
        log.info("the index is reachable; indexing")

    @mode.Service.timer(SAMPLE_INTERVAL_S, exec_first=True)
    async def _sample_metrics(self) -> None:
        """Refresh the sampled gauges; a failure is logged once per run of failures."""
        try:
            await self.sampler.sample()
        except Exception as exc:  # the edge of a background task: never crash the worker
            if not self._sampling_failed and not self.should_stop:  # stopping closes clients
                log.warning("metrics sampling failed: %s", exc)
            self._sampling_failed = True
        else:
            self._sampling_failed = False

    @mode.Service.timer(PRUNE_INTERVAL_S)
    async def _prune_publishers(self) -> None:
        """Close the clients of destinations deleted, disabled or changed (not only when the
        cache overflows, or the next delivery to a changed destination comes)."""
        try:
            closed = await self.publishers.prune(self.view.get)
        except Exception as exc:  # the edge of a background task: never crash the worker
            log.warning("closing stale publishers failed: %s", exc)
        else:
            if closed:
                log.info("closed %d stale publishers", closed)

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=self.settings.producer_linger_ms,
            partitioner=CachedPartitioner(),
            client_id=f"{self.settings.app_id}-worker",
        )

    async def _renew_producer(self) -> AIOKafkaProducer:
        """A started producer in place of one whose state the broker lost (it restarted):
        the old one is closed, failing its sends, which go again on the new one."""
        stale, self.producer = self.producer, self._new_producer()
        await self.producer.start()
        with contextlib.suppress(Exception):  # it is broken already: closing is best effort
            await asyncio.wait_for(stale.stop(), timeout=PRODUCER_STOP_S)
        return self.producer

    async def _give_up(self, exc: BaseException) -> None:
        """A consume loop cannot go on: crash the worker (Faust stops every service and
        the process exits non-zero), so its supervisor starts a fresh one. A stop that
        hangs (on the broker that caused this) is cut short: the process leaves with 75
        after GIVE_UP_STOP_S, committing nothing more, so nothing unfinished is skipped."""
        asyncio.get_running_loop().call_later(GIVE_UP_STOP_S, exit_process)
        await self.crash(exc)

    async def _delivery_loop_alive(self) -> bool:
        return self.runner.loop is not None and self.runner.loop.alive

    async def _index_loop_alive(self) -> bool:
        loop = self.indexer.loop if self.indexer is not None else None
        return loop is not None and loop.alive

    async def _kafka_ready(self) -> bool:
        if not self.view.ready.is_set():
            return False
        await self.view.end_offsets()  # the broker answers now, not just at start-up
        return True

    async def _database_ready(self) -> bool:
        if self.pool is None or self._index_start is None or not self._index_start.done():
            return False
        async with self.pool.acquire() as connection:
            return bool(await connection.fetchval("select 1"))


def bind_worker_services(settings: Settings, view: DestinationView) -> type[WorkerServices]:
    """A WorkerServices class bound to these settings (Faust instantiates it itself)."""
    return type("BoundWorkerServices", (WorkerServices,), {"settings": settings, "view": view})
