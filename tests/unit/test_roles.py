"""Worker roles (`herald worker --role`), the services each role's process runs, and the
partition counts `herald topics apply` may raise for scaling out."""

from __future__ import annotations

import pytest

import api.cli
from pipeline.crypto import generate_key
from pipeline.roles import DELIVER, INDEX, ROLES, ROUTER, describe, parse_roles
from pipeline.settings import Settings
from pipeline.topics import (
    DELIVERIES,
    DESTINATION_CHANGES,
    DESTINATIONS,
    EVENT_IDS,
    EVENTS,
    TopicSpec,
    plan_partitions,
)
from pipeline.view import DestinationView
from pipeline.worker import (
    DeliverService,
    HttpService,
    IndexService,
    SamplerService,
    ViewService,
    role_services,
)


def test_roles_parse_all_or_a_comma_list() -> None:
    assert parse_roles("all") == frozenset(ROLES)
    assert parse_roles("router, index") == {ROUTER, INDEX}
    assert describe(parse_roles("index,router")) == "router,index"
    assert describe(parse_roles("deliver,index,router")) == "all"
    for bad in ("", "sink", "router,all", ","):
        with pytest.raises(ValueError, match="roles are"):
            parse_roles(bad)


def test_the_worker_command_takes_a_role() -> None:
    parser = api.cli.build_parser()
    assert parser.parse_args(["worker"]).roles == frozenset(ROLES)
    assert parser.parse_args(["worker", "--role", "deliver"]).roles == {DELIVER}
    with pytest.raises(SystemExit):
        parser.parse_args(["worker", "--role", "sink"])


async def _kinds(roles: set[str]) -> tuple[list[type], HttpService]:
    view = DestinationView("127.0.0.1:1") if roles & {ROUTER, DELIVER} else None
    settings = Settings(encryption_keys=generate_key())
    services = role_services(settings, frozenset(roles), view)
    for service in services:
        if isinstance(service, DeliverService):
            await service.producer.stop()  # made, never started: nothing to leave open
    http = services[-1]
    assert isinstance(http, HttpService)
    return [type(s) for s in services], http


async def test_each_role_runs_only_its_services_and_checks() -> None:
    kinds, http = await _kinds({DELIVER})
    assert kinds == [ViewService, DeliverService, HttpService]
    assert set(http.checks) == {"kafka", "delivery_loop"}
    kinds, http = await _kinds({INDEX})
    assert kinds == [IndexService, HttpService]
    assert set(http.checks) == {"database", "index_loop"} and not http.degradable
    kinds, http = await _kinds({ROUTER, INDEX})
    assert kinds == [ViewService, IndexService, SamplerService, HttpService]
    assert http.degradable == {"database", "index_loop"}  # routing goes on without the index
    kinds, _ = await _kinds(set(ROLES))
    assert kinds == [ViewService, DeliverService, IndexService, SamplerService, HttpService]


def _specs(**partitions: int) -> list[TopicSpec]:
    return [TopicSpec(name, count, 1) for name, count in partitions.items()]


def test_apply_raises_partitions_and_keeps_pairs_equal() -> None:
    specs = _specs(**{EVENTS: 12, EVENT_IDS: 12, DELIVERIES: 12})
    current = {EVENTS: 6, EVENT_IDS: 6, DELIVERIES: 6}
    assert plan_partitions(specs, current) == ({EVENTS: 12, EVENT_IDS: 12, DELIVERIES: 12}, [])
    # A partner missing on the broker is created with the new count: raise the other.
    assert plan_partitions(specs, {EVENTS: 6}) == ({EVENTS: 12}, [])
    assert plan_partitions(specs, {EVENTS: 12, EVENT_IDS: 12, DELIVERIES: 12}) == ({}, [])


def test_apply_never_shrinks_nor_splits_a_pair() -> None:
    specs = _specs(**{EVENTS: 12, EVENT_IDS: 12, DELIVERIES: 6})
    raise_to, drift = plan_partitions(specs, {EVENTS: 6, EVENT_IDS: 16, DELIVERIES: 12})
    assert raise_to == {}
    assert sorted(d.split(":")[0] for d in drift) == [DELIVERIES, EVENT_IDS, EVENTS]


def test_apply_never_raises_the_destination_topics() -> None:
    specs = _specs(**{DESTINATION_CHANGES: 6, DESTINATIONS: 6})
    raise_to, drift = plan_partitions(specs, {DESTINATION_CHANGES: 3, DESTINATIONS: 3})
    assert raise_to == {}
    assert len(drift) == 2 and all("move partition" in d for d in drift)
