"""The ingest role: `herald worker --role ingest` consumes the configured sources.

A process of its own (it runs the API's validation and publishing, not the pipeline's
agents): the destination view (for the stamp every publish carries), the tenant view (a
record's tenant must exist), the `events` producer, one consumer per source, and HTTP.
/readyz names each source (`source:<name>`): one that does not answer is `degraded`,
never making the process unready, since the other sources go on; Herald's own broker not
answering (`kafka`) does make it unready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import mode

from api.auth import KeyRing
from api.publishing import event_producer
from api.sources.ingest import Ingester
from api.sources.kafka import KafkaSourceConsumer
from api.sources.rabbitmq import RabbitMQSourceConsumer
from api.sources.reconnect import Reconnecting
from api.tenant_view import TenantView
from pipeline.health import Check
from pipeline.settings import Settings
from pipeline.source_settings import KafkaSource, SourceSettings
from pipeline.supervision import exit_process
from pipeline.view import DestinationView
from pipeline.worker import GIVE_UP_STOP_S, HttpService, worker_options

log = logging.getLogger(__name__)

VIEW_START_TIMEOUT_S = 60.0


def source_consumer(source: SourceSettings, ingester: Ingester) -> Reconnecting:
    """The consumer of one configured source."""
    if isinstance(source, KafkaSource):
        return KafkaSourceConsumer(source, ingester)
    return RabbitMQSourceConsumer(source, ingester)


class IngestService(mode.Service):
    """The views, the producer and the sources' consumers of one ingest process."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.view = DestinationView(settings.kafka_bootstrap)
        self.tenants = TenantView(settings.kafka_bootstrap)
        self.producer = event_producer(settings, f"{settings.app_id}-ingest")
        keys = KeyRing(settings, self.tenants)
        ingester = Ingester(settings, self.view, self.producer, keys.exists)
        self.consumers = [source_consumer(s, ingester) for s in settings.all_sources()]
        self._consuming: list[asyncio.Task[None]] = []

    async def on_start(self) -> None:
        """The producer and both views (read to their end), then every source."""
        await self.producer.start()
        await self.view.start()
        await self.tenants.start()
        await asyncio.wait_for(self.tenants.ready.wait(), VIEW_START_TIMEOUT_S)
        await asyncio.wait_for(self.view.ready.wait(), VIEW_START_TIMEOUT_S)
        for consumer in self.consumers:
            task = asyncio.create_task(self._run(consumer), name=f"source-{consumer.name}")
            self._consuming.append(task)
        log.info("ingesting from %d sources", len(self.consumers))

    async def on_stop(self) -> None:
        """Stop consuming (an unfinished batch stays uncommitted), then close the clients."""
        for task in self._consuming:
            task.cancel()
        for task in self._consuming:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.tenants.stop()
        await self.view.stop()
        await self.producer.stop()

    async def _run(self, consumer: Reconnecting) -> None:
        try:
            await consumer.run()
        except Exception as exc:  # Herald's own broker failing us: restart the process
            asyncio.get_running_loop().call_later(GIVE_UP_STOP_S, exit_process)
            await self.crash(exc)

    async def kafka_ready(self) -> bool:
        """/readyz: both views caught up once, and Herald's broker answers now."""
        if not self.view.ready.is_set() or not self.tenants.ready.is_set():
            return False
        await self.view.end_offsets()
        return True

    def checks(self) -> dict[str, Check]:
        """/readyz's checks: `kafka`, then `source:<name>` per source."""
        checks: dict[str, Check] = {"kafka": self.kafka_ready}
        for consumer in self.consumers:
            checks[f"source:{consumer.name}"] = consumer.reachable
        return checks


class IngestWorker(mode.Service):
    """The ingest process's services: ingest, then HTTP (stopped first)."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings

    def on_init_dependencies(self) -> list[mode.Service]:
        """Called by mode at the first start, in the event loop (the clients need one)."""
        ingest = IngestService(self.settings)
        checks = ingest.checks()
        degradable = {name for name in checks if name != "kafka"}
        return [ingest, HttpService(self.settings, checks, degradable)]


def run_ingest(settings: Settings) -> None:
    """Run an ingest process in the foreground until interrupted."""
    names = ", ".join(source.name for source in settings.all_sources()) or "none configured"
    log.info("worker roles: ingest (sources: %s)", names)
    mode.Worker(IngestWorker(settings), **worker_options(settings)).execute_from_commandline()
