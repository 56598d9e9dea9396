"""The router role's Faust app (fold and router agents); the process's other role services
run beside the agents (pipeline/worker.py)."""

from __future__ import annotations

import faust

from pipeline import faust_kafka
from pipeline.agents import fold, router
from pipeline.partitioning import CachedPartitioner
from pipeline.roles import ROLES, Roles
from pipeline.settings import Settings
from pipeline.topics import (
    DELIVERIES,
    DESTINATION_CHANGES,
    DESTINATIONS,
    EVENT_IDS,
    EVENTS,
    load_specs,
)
from pipeline.view import DestinationView
from pipeline.worker import bind_worker_services


def create_app(settings: Settings, roles: Roles = frozenset(ROLES)) -> faust.App:
    """Build the worker's Faust app with its agents and the services of `roles`."""
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
        # The router's deliveries: no linger by default (settings.router_linger_ms), as its
        # batch waits for their acknowledgements before its events count as routed.
        producer_linger_ms=settings.router_linger_ms,
        producer_partitioner=CachedPartitioner(),
        # The router's events are committed this often (Faust's default is 2.8 s): what a
        # killed worker routed since its last commit is routed again by the next owner, and
        # the router now routes a burst within well under a second, so a longer interval
        # meant delivering nearly every event of a burst twice after a crash.
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.consumer_session_timeout_s,
        topic_replication_factor=specs[EVENTS].replication_factor,
        table_cleanup_interval=3600.0,
    )
    # Before anything creates the consumer: a stream partition with no committed offset
    # must be rewound to its beginning after a rebalance (see pipeline/faust_kafka.py).
    app.transport = faust_kafka.Transport(app.conf.broker_consumer, app)
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
    seen = app.Table(
        "event-ids",
        default=None,
        partitions=specs[EVENTS].partitions,
        changelog_topic=app.topic(
            EVENT_IDS,
            partitions=specs[EVENTS].partitions,
            key_serializer="raw",
            value_serializer="json",
        ),
        key_type=bytes,
        value_type=int,
    )
    view = DestinationView(settings.kafka_bootstrap)
    fold.register(app, app.topic(DESTINATION_CHANGES), table, view)
    router.register(
        app,
        app.topic(EVENTS),
        app.topic(DELIVERIES),
        view,
        settings.view_wait_timeout_s,
        seen,
        settings.broker_give_up_s,
    )
    app.service(bind_worker_services(settings, roles, view))
    return app
