"""The worker: one Faust app (fold and router agents) plus the delivery runner and /metrics."""

from __future__ import annotations

from typing import Any

import faust
import mode
from aiohttp import web
from aiokafka import AIOKafkaProducer

from pipeline.agents import fold, router
from pipeline.attempts import AttemptRecorder
from pipeline.crypto import Sealer
from pipeline.delivery import DUE_HEADER, DeliveryRunner
from pipeline.health import health_routes
from pipeline.publishers import PublisherCache
from pipeline.settings import Settings
from pipeline.sinks import load_sink
from pipeline.topics import (
    DELIVERIES,
    DESTINATION_CHANGES,
    DESTINATIONS,
    EVENTS,
    load_specs,
)
from pipeline.view import DestinationView


def create_app(settings: Settings) -> faust.App:
    """Build the worker's Faust app with its agents and services."""
    specs = {s.name: s for s in load_specs(settings.topics_file)}
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(settings.worker_data_dir),
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        topic_replication_factor=specs[EVENTS].replication_factor,
        table_cleanup_interval=3600.0,
    )
    partitions = specs[DESTINATIONS].partitions
    changelog = app.topic(
        DESTINATIONS,
        partitions=partitions,
        compacting=True,
        deleting=False,
        key_serializer="raw",
        value_serializer="raw",
        internal=False,
    )
    table = app.Table(
        "destinations",
        default=None,
        partitions=partitions,
        changelog_topic=changelog,
        key_type=bytes,
        value_type=bytes,
    )
    view = DestinationView(settings.kafka_bootstrap)
    fold.register(app, app.topic(DESTINATION_CHANGES), table)
    router.register(
        app, app.topic(EVENTS), app.topic(DELIVERIES), view, settings.view_wait_timeout_s
    )
    app.service(_worker_services(settings, view))
    return app


def _worker_services(settings: Settings, view: DestinationView) -> type[mode.Service]:
    class WorkerServices(mode.Service):
        """The destination view, the delivery runner and the worker's HTTP endpoints."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.producer = AIOKafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap,
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                client_id=f"{settings.app_id}-worker",
            )
            self.publishers = PublisherCache(
                settings, Sealer(settings.encryption_keys.get_secret_value())
            )
            self.runner = DeliveryRunner(
                settings, view, AttemptRecorder(self.producer, DUE_HEADER), self.publishers
            )
            self.http: web.AppRunner | None = None

        async def on_start(self) -> None:
            await view.start()
            await self.producer.start()
            await view.ready.wait()
            await self.runner.start()
            http = web.Application()
            http.add_routes(health_routes({"kafka": self._kafka_ready}))
            self.http = web.AppRunner(http, access_log=None)
            await self.http.setup()
            await web.TCPSite(self.http, settings.worker_host, settings.worker_port).start()

        async def _kafka_ready(self) -> bool:
            if not view.ready.is_set():
                return False
            await view.end_offsets()
            return True

        async def on_stop(self) -> None:
            if self.http is not None:
                await self.http.cleanup()
            await self.runner.stop()
            await self.publishers.aclose()
            await load_sink("webhook").aclose()
            await self.producer.stop()
            await view.stop()

    return WorkerServices


def run_worker(settings: Settings) -> None:
    """Run the worker in the foreground until interrupted."""
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
