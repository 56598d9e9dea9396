"""The worker process: one small service per role (pipeline/roles.py), composed.

`run_worker` starts a process for some roles. With the router role it is a Faust worker
(the agents live in pipeline/app.py) that starts `WorkerServices` once its tables have
recovered; without it, a plain mode worker runs `WorkerServices` alone, with no Faust
app and no Faust consumer thread. `WorkerServices` starts its children in order and stops
them in reverse: the destination view, delivery, index, the shared-gauge sampler, HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, ClassVar

import asyncpg
import mode
from aiohttp import web
from aiokafka import AIOKafkaProducer

from pipeline.attempts import AttemptRecorder
from pipeline.crypto import Sealer
from pipeline.db import DATABASE_ERRORS, create_pool, migrate
from pipeline.delivery import DUE_HEADER, DeliveryRunner
from pipeline.health import Check, health_routes
from pipeline.indexer import Indexer
from pipeline.logs import logging_config
from pipeline.partitioning import CachedPartitioner
from pipeline.publishers import PublisherCache
from pipeline.roles import DELIVER, INDEX, ROUTER, Roles, describe
from pipeline.sampler import MetricsSampler
from pipeline.settings import Settings
from pipeline.sinks import aclose_all
from pipeline.supervision import exit_process
from pipeline.view import DestinationView

log = logging.getLogger(__name__)

# How long a worker that gives up may take to stop cleanly before it just leaves.
GIVE_UP_STOP_S = 15.0
# How long a replaced producer may take to close.
PRODUCER_STOP_S = 5.0

# Below Prometheus' scrape interval (15 s in ops/prometheus/prometheus.yml). The shared
# gauges cost eight broker requests a sample (offsets, and each group's coordinator and
# committed offsets); a process's own gauges cost nothing but are as often as useful.
SAMPLE_INTERVAL_S = 10.0
OWN_GAUGES_INTERVAL_S = 5.0
PRUNE_INTERVAL_S = 10.0
INDEX_RETRY_MAX_S = 30.0


class ViewService(mode.Service):
    """The destination view of the router and deliver roles; started first, stopped last."""

    def __init__(self, view: DestinationView, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.view = view

    async def on_start(self) -> None:
        """Follow `destinations` and wait until the view has read what was there."""
        await self.view.start()
        await self.view.ready.wait()

    async def on_stop(self) -> None:
        """Stop following."""
        await self.view.stop()

    async def ready(self) -> bool:
        """/readyz: the view caught up once, and the broker answers now."""
        if not self.view.ready.is_set():
            return False
        await self.view.end_offsets()
        return True


class DeliverService(mode.Service):
    """The deliver role: the delivery runner, its attempt producer and publisher cache."""

    def __init__(self, settings: Settings, view: DestinationView, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.view = view
        self.producer = self._new_producer()
        self.publishers = PublisherCache(
            settings, Sealer(settings.encryption_keys.get_secret_value())
        )
        recorder = AttemptRecorder(
            self.producer, DUE_HEADER, give_up_s=settings.broker_give_up_s, renew=self._renew
        )
        self.runner = DeliveryRunner(settings, view, recorder, self.publishers)

    async def on_start(self) -> None:
        """The producer, then the runner (it joins the sinks group and starts consuming)."""
        await self.producer.start()
        await self.runner.start(self._give_up)

    async def on_stop(self) -> None:
        """In-flight deliveries get a moment to finish and commit; then close the clients."""
        await self.runner.stop()
        await self.publishers.aclose()
        await aclose_all()
        await self.producer.stop()

    async def loop_alive(self) -> bool:
        """/readyz: the delivery loop runs and is not stuck."""
        return self.runner.loop is not None and self.runner.loop.alive

    @mode.Service.timer(OWN_GAUGES_INTERVAL_S)
    async def _observe(self) -> None:
        """This process's own gauges: its retry backlog held until due, its lanes."""
        self.runner.observe_backlog()

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

    async def _renew(self) -> AIOKafkaProducer:
        """A started producer in place of one whose state the broker lost (it restarted):
        the old one is closed, failing its sends, which go again on the new one."""
        stale, self.producer = self.producer, self._new_producer()
        await self.producer.start()
        with contextlib.suppress(Exception):  # it is broken already: closing is best effort
            await asyncio.wait_for(stale.stop(), timeout=PRODUCER_STOP_S)
        return self.producer

    async def _give_up(self, exc: BaseException) -> None:
        """A consume loop cannot go on: crash the process (every service stops and it exits
        non-zero), so its supervisor starts a fresh one. A stop that hangs (on the broker
        that caused this) is cut short: the process leaves with 75 after GIVE_UP_STOP_S,
        committing nothing more, so nothing unfinished is skipped."""
        asyncio.get_running_loop().call_later(GIVE_UP_STOP_S, exit_process)
        await self.crash(exc)


class IndexService(mode.Service):
    """The index role: the indexer and its PostgreSQL pool. Delivery never waits for it:
    it starts once PostgreSQL answers, and catches up from its committed offsets."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        self.indexer: Indexer | None = None
        self._index_start: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        """Open the pool (lazily connecting) and start migrating and indexing behind."""
        self.pool = await create_pool(self.settings.database_url)
        self.indexer = Indexer(self.settings, self.pool)
        self._index_start = asyncio.create_task(self._start_index(), name="index-start")

    async def on_stop(self) -> None:
        """Stop indexing, close the pool."""
        if self._index_start is not None:
            self._index_start.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._index_start
        if self.indexer is not None:
            await self.indexer.stop()
        if self.pool is not None:
            await self.pool.close()

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

    async def loop_alive(self) -> bool:
        """/readyz: the index loop runs and is not stuck."""
        loop = self.indexer.loop if self.indexer is not None else None
        return loop is not None and loop.alive

    async def database_ready(self) -> bool:
        """/readyz: migrated, and PostgreSQL answers now."""
        if self.pool is None or self._index_start is None or not self._index_start.done():
            return False
        async with self.pool.acquire() as connection:
            return bool(await connection.fetchval("select 1"))


class SamplerService(mode.Service):
    """Samples the shared-state gauges (pipeline/sampler.py); run by the router role only,
    so scaling delivering processes adds no copies of them."""

    def __init__(self, settings: Settings, view: DestinationView, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sampler = MetricsSampler(settings, view)
        self._failing = False

    async def on_start(self) -> None:
        """Connect the sampler's clients."""
        await self.sampler.start()

    async def on_stop(self) -> None:
        """Close them."""
        await self.sampler.stop()

    @mode.Service.timer(SAMPLE_INTERVAL_S, exec_first=True)
    async def _sample(self) -> None:
        """Refresh the sampled gauges; a failure is logged once per run of failures."""
        try:
            await self.sampler.sample()
        except Exception as exc:  # the edge of a background task: never crash the worker
            if not self._failing and not self.should_stop:  # stopping closes clients
                log.warning("metrics sampling failed: %s", exc)
            self._failing = True
        else:
            self._failing = False


class HttpService(mode.Service):
    """/healthz, /readyz (the checks of what this process runs) and /metrics."""

    def __init__(
        self, settings: Settings, checks: dict[str, Check], degradable: set[str], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.checks = checks
        self.degradable = degradable
        self.http: web.AppRunner | None = None

    async def on_start(self) -> None:
        """Listen on the worker port."""
        app = web.Application()
        app.add_routes(health_routes(self.checks, degradable=self.degradable))
        self.http = web.AppRunner(app, access_log=None)
        await self.http.setup()
        site = web.TCPSite(self.http, self.settings.worker_host, self.settings.worker_port)
        await site.start()

    async def on_stop(self) -> None:
        """Stop answering first, so a stopping process is taken out of rotation."""
        if self.http is not None:
            await self.http.cleanup()


def role_services(
    settings: Settings, roles: Roles, view: DestinationView | None
) -> list[mode.Service]:
    """The services of `roles`, in start order; `view` is needed by router and deliver."""
    services: list[mode.Service] = []
    checks: dict[str, Check] = {}
    if view is not None:
        view_service = ViewService(view)
        services.append(view_service)
        checks["kafka"] = view_service.ready
    if DELIVER in roles:
        assert view is not None
        deliver = DeliverService(settings, view)
        services.append(deliver)
        checks["delivery_loop"] = deliver.loop_alive
    degradable: set[str] = set()
    if INDEX in roles:
        index = IndexService(settings)
        services.append(index)
        checks |= {"database": index.database_ready, "index_loop": index.loop_alive}
        # Beside other roles, the index (PostgreSQL and its loop) may be down while
        # routing and delivery go on; alone, it is all the process is for.
        if roles != {INDEX}:
            degradable = {"database", "index_loop"}
    if ROUTER in roles:
        assert view is not None
        services.append(SamplerService(settings, view))
    services.append(HttpService(settings, checks, degradable))
    return services


class WorkerServices(mode.Service):
    """The role services of one process, started in order and stopped in reverse. With the
    router role, Faust starts it once its tables have recovered."""

    settings: ClassVar[Settings]
    roles: ClassVar[Roles]
    view: ClassVar[DestinationView | None]

    def on_init_dependencies(self) -> list[mode.Service]:
        """Called by mode at the first start."""
        return role_services(self.settings, self.roles, self.view)


def bind_worker_services(
    settings: Settings, roles: Roles, view: DestinationView | None
) -> type[WorkerServices]:
    """A WorkerServices class bound to these arguments (Faust instantiates it itself)."""
    bound = {"settings": settings, "roles": roles, "view": view}
    return type("BoundWorkerServices", (WorkerServices,), bound)


def worker_options(settings: Settings) -> dict[str, Any]:
    """The arguments of a worker process's mode.Worker (or faust.Worker)."""
    # mode replaces the root logger's handlers when it starts: give it ours.
    return {
        "loglevel": settings.log_level,
        "logging_config": logging_config(settings.log_level, service="worker"),
        "quiet": True,
    }


def run_worker(settings: Settings, roles: Roles) -> None:
    """Run a worker process of `roles` in the foreground until interrupted (SIGTERM or
    SIGINT stop it cleanly; a crashed service makes it exit non-zero)."""
    log.info("worker roles: %s", describe(roles))
    options = worker_options(settings)
    worker: mode.Worker
    if ROUTER in roles:
        import faust  # imported only where it runs

        from pipeline.app import create_app

        worker = faust.Worker(create_app(settings, roles), **options)
    else:
        view = DestinationView(settings.kafka_bootstrap) if DELIVER in roles else None
        worker = mode.Worker(bind_worker_services(settings, roles, view)(), **options)
    worker.execute_from_commandline()
