"""The worker's services beside the Faust agents: view, delivery runner, indexer, HTTP."""

from __future__ import annotations

from typing import Any, ClassVar

import asyncpg
import mode
from aiohttp import web
from aiokafka import AIOKafkaProducer

from pipeline.attempts import AttemptRecorder
from pipeline.crypto import Sealer
from pipeline.db import create_pool, migrate
from pipeline.delivery import DUE_HEADER, DeliveryRunner
from pipeline.health import health_routes
from pipeline.indexer import Indexer
from pipeline.publishers import PublisherCache
from pipeline.settings import Settings
from pipeline.sinks import aclose_all
from pipeline.view import DestinationView


class WorkerServices(mode.Service):
    """Started by Faust once its tables have recovered; stopped before it shuts down."""

    settings: ClassVar[Settings]
    view: ClassVar[DestinationView]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        settings = self.settings
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
            settings, self.view, AttemptRecorder(self.producer, DUE_HEADER), self.publishers
        )
        self.http: web.AppRunner | None = None
        self.pool: asyncpg.Pool | None = None
        self.indexer: Indexer | None = None

    async def on_start(self) -> None:
        """View first (routing and delivery read it), then delivery, index and HTTP."""
        settings = self.settings
        await self.view.start()
        await self.producer.start()
        await self.view.ready.wait()
        await self.runner.start()
        self.pool = await create_pool(settings.database_url)
        await migrate(self.pool)
        self.indexer = Indexer(settings, self.pool)
        await self.indexer.start()
        http = web.Application()
        http.add_routes(
            health_routes({"kafka": self._kafka_ready, "database": self._database_ready})
        )
        self.http = web.AppRunner(http, access_log=None)
        await self.http.setup()
        await web.TCPSite(self.http, settings.worker_host, settings.worker_port).start()

    async def on_stop(self) -> None:
        """Reverse order; in-flight deliveries get a moment to finish and commit."""
        if self.http is not None:
            await self.http.cleanup()
        if self.indexer is not None:
            await self.indexer.stop()
        if self.pool is not None:
            await self.pool.close()
        await self.runner.stop()
        await self.publishers.aclose()
        await aclose_all()
        await self.producer.stop()
        await self.view.stop()

    async def _kafka_ready(self) -> bool:
        if not self.view.ready.is_set():
            return False
        await self.view.end_offsets()  # the broker answers now, not just at start-up
        return True

    async def _database_ready(self) -> bool:
        if self.pool is None:
            return False
        async with self.pool.acquire() as connection:
            return bool(await connection.fetchval("select 1"))


def bind_worker_services(settings: Settings, view: DestinationView) -> type[WorkerServices]:
    """A WorkerServices class bound to these settings (Faust instantiates it itself)."""
    return type("BoundWorkerServices", (WorkerServices,), {"settings": settings, "view": view})
