"""Operator events end to end: the stack's API and worker are restarted for this module
with an operator sink (a real HTTP receiver) and an auto-disable threshold of 5, then
restarted as they were. Every alert arrives through the real pipeline: events topic,
router, runner, webhook sink, signed with the operator sink's secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import ids
from pipeline.operator_events import OPERATOR_SINK_ID, OPERATOR_TENANT
from pipeline.signing import generate_secret, secret_bytes
from pipeline.topics import EVENTS
from tests.integration.api_client import Api
from tests.integration.conftest import (
    API_PORT,
    WORKER_PORT,
    Services,
    Stack,
    _start_herald,
    _stop_processes,
    _wait_ready,
)
from tests.support import Receiver, eventually

OPERATOR_SECRET = generate_secret()
OPERATOR_EVENTS = "herald_operator_events"
DEAD_LETTERS = "herald_dead_letters"
AUTO_DISABLED = "herald_destinations_auto_disabled"
DISABLE_AFTER = 5  # consecutive_failures at 3 (0.5) and 4 (0.8), disabled at 5


@dataclass
class OperatorReceiver:
    """The on-call tool: a real HTTP server in a thread of its own (it outlives each
    test's event loop), recording every POST and answering `status`."""

    status: int = 200
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> OperatorReceiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                owner.requests.append((headers, body))
                self.send_response(owner.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/oncall"

    def events(self, destination_id: str | None = None) -> list[dict[str, Any]]:
        """Distinct events received (by id), about `destination_id` if given."""
        seen: dict[str, dict[str, Any]] = {}
        for _, body in list(self.requests):
            event = orjson.loads(body)
            if destination_id is None or event["data"].get("destination_id") == destination_id:
                seen.setdefault(event["id"], event)
        return list(seen.values())

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _restart(stack: Stack, env: dict[str, str]) -> None:
    """Stop the stack's worker and API and start them again with `env`."""
    _stop_processes(stack.processes)
    for role, port in (("worker", WORKER_PORT), ("api", API_PORT)):
        log = stack.logs / f"{role}.log"
        stack.processes[role] = _start_herald(role, port, env, log)
        _wait_ready(stack.processes[role], port, log, timeout_s=120)


@pytest.fixture(scope="module")
def operator_receiver() -> Iterator[OperatorReceiver]:
    receiver = OperatorReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def operator_stack(
    stack: Stack, services: Services, operator_receiver: OperatorReceiver
) -> Iterator[Stack]:
    sink = {
        "name": "on-call",
        "type": "webhook",
        "events": ["*"],
        "webhook": {"url": operator_receiver.url, "secret": OPERATOR_SECRET},
    }
    env = {
        **stack.env,
        "HERALD_OPERATOR_SINK": json.dumps(sink),
        "HERALD_AUTO_DISABLE_AFTER_DEAD_LETTERS": str(DISABLE_AFTER),
        "HERALD_OPERATOR_EVENTS_FAILURE_FRACTIONS": "[0.5, 0.8]",
        "HERALD_OPERATOR_EVENTS_EXHAUSTED_WINDOW_S": "600",
    }
    _restart(stack, env)
    try:
        yield stack
    finally:
        _restart(stack, stack.env)


def _verify(headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks signature, checked with the operator sink's secret."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    digest = hmac.digest(secret_bytes(OPERATOR_SECRET), signed, hashlib.sha256)
    expected = "v1," + base64.b64encode(digest).decode()
    return expected in headers["webhook-signature"].split()


async def _counter(stack: Stack, name: str) -> dict[str, float]:
    """A counter of the worker's /metrics, by the value of its one label."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.worker_url}/metrics") as response,
    ):
        text = await response.text()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "_total{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('="', 1)[1].split('"', 1)[0]] = float(value)
    return found


async def test_destination_changes_reach_the_operator_sink_signed(
    operator_stack: Stack, operator_receiver: OperatorReceiver, api: Api, receiver: Receiver
) -> None:
    created = await api.create_webhook(f"{receiver.url}/changes?token=hidden", ["changes.x"])
    destination_id = created["id"]
    path = f"/v2/event-destinations/{destination_id}"
    assert (await api.call("PATCH", path, {"name": "renamed"}))[0] == 200
    assert (await api.call("DELETE", path))[0] == 200

    def all_three() -> list[dict[str, Any]]:
        events = operator_receiver.events(destination_id)
        return events if len(events) == 3 else []

    events = await eventually(all_three, timeout_s=30, what="created, updated, deleted")
    by_type = {event["type"]: event for event in events}
    assert set(by_type) == {"destination.created", "destination.updated", "destination.deleted"}
    for event in events:
        assert event["data"]["tenant_id"] == "dev"
    assert by_type["destination.created"]["data"]["destination_type"] == "webhook"
    assert by_type["destination.updated"]["data"]["changed_fields"] == ["name"]
    assert by_type["destination.updated"]["data"]["name"] == "renamed"
    mine = [
        (headers, body)
        for headers, body in operator_receiver.requests
        if orjson.loads(body)["data"].get("destination_id") == destination_id
    ]
    assert all(_verify(headers, body) for headers, body in mine)
    assert not any(b"hidden" in body or b"whsec_" in body for _, body in mine)


async def test_a_dead_destination_warns_at_fractions_then_once_per_window_then_disabled(
    operator_stack: Stack, operator_receiver: OperatorReceiver, api: Api, receiver: Receiver
) -> None:
    receiver.status = 500
    event_type = f"dying.{ids.new_id('t').lower()}"
    destination = await api.create_webhook(f"{receiver.url}/dead", [event_type])
    before = await _counter(operator_stack, OPERATOR_EVENTS)
    failed = f"/v2/event-destinations/{destination['id']}/event-deliveries?status=failed"
    # One at a time: dead letters at the same moment are each judged against the count
    # before the others were recorded, which puts the auto-disable off by their number.
    for n in range(1, DISABLE_AFTER + 1):
        await api.publish(event_type)

        async def dead_lettered(count: int = n) -> bool:
            _, page = await api.call("GET", failed)
            return len(page["data"]) == count

        await eventually(dead_lettered, timeout_s=30, what=f"dead letter {n}")

    def disabled() -> list[dict[str, Any]]:
        events = operator_receiver.events(destination["id"])
        return [e for e in events if e["type"] == "destination.disabled"]

    (event,) = await eventually(disabled, timeout_s=60, what="destination.disabled")
    assert "exhausted their retries" in event["data"]["reason"]
    # One emitter writes in order: once `disabled` is written, so is every event before it.
    after = await _counter(operator_stack, OPERATOR_EVENTS)
    written = {t: after.get(t, 0) - before.get(t, 0) for t in after}
    assert written.get("destination.consecutive_failures") == 2
    assert written.get("delivery.exhausted_retries") == 1  # 5 dead letters, one window

    def warnings() -> list[dict[str, Any]]:
        events = operator_receiver.events(destination["id"])
        found = [e for e in events if e["type"] != "destination.created"]
        return found if len(found) == 4 else []

    events = await eventually(warnings, timeout_s=30, what="every warning delivered")
    failures = sorted(
        (e["data"]["consecutive_failures"], e["data"]["fraction"])
        for e in events
        if e["type"] == "destination.consecutive_failures"
    )
    assert failures == [(3, 0.5), (4, 0.8)]
    (exhausted,) = [e for e in events if e["type"] == "delivery.exhausted_retries"]
    assert exhausted["data"]["count"] == 1
    assert exhausted["data"]["window_s"] == 600
    assert exhausted["data"]["tenant_id"] == "dev"


async def test_no_caller_can_see_or_name_the_operator_tenant(
    operator_stack: Stack, api: Api, platform: Api
) -> None:
    named = {"Herald-Tenant": OPERATOR_TENANT}
    # It has no tenant record and no key: like any tenant that is not the caller's.
    status, body = await platform.call("GET", "/v2/event-destinations", headers=named)
    assert status == 404 and body["errors"][0]["field"] == "Herald-Tenant", body
    status, body = await api.call("GET", "/v2/event-destinations", headers=named)
    assert status == 403 and body["errors"][0]["field"] == "Herald-Tenant", body
    status, body = await platform.call("POST", "/v2/tenants", {"id": OPERATOR_TENANT, "name": "x"})
    assert status == 400 and "id" in body["errors"], body
    status, _ = await platform.call("GET", f"/v2/tenants/{OPERATOR_TENANT}")
    assert status == 404
    status, _ = await api.call("GET", f"/v2/event-destinations/{OPERATOR_SINK_ID}")
    assert status == 404
    _, listed = await api.call("GET", "/v2/event-destinations?limit=100")
    assert OPERATOR_SINK_ID not in {d["id"] for d in listed["data"]}


async def _operator_records_since(services: Services, since_ms: int) -> list[dict[str, Any]]:
    """The operator tenant's events written to `events` since `since_ms`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=services.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # learn every topic's partitions
        partitions = [
            TopicPartition(EVENTS, p) for p in consumer.partitions_for_topic(EVENTS) or []
        ]
        consumer.assign(partitions)
        starts = await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            start = starts[tp]
            consumer.seek(tp, start.offset if start is not None else ends[tp])
        found: list[dict[str, Any]] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    event = orjson.loads(record.value)
                    if event.get("tenant") == OPERATOR_TENANT:
                        found.append(event)
        return found
    finally:
        await consumer.stop()


async def test_the_operator_sink_failing_raises_no_events_about_itself(
    operator_stack: Stack,
    operator_receiver: OperatorReceiver,
    services: Services,
    api: Api,
    receiver: Receiver,
) -> None:
    since_ms = int(time.time() * 1000)
    before = (await _counter(operator_stack, DEAD_LETTERS)).get("webhook", 0)
    disabled_before = await _counter(operator_stack, AUTO_DISABLED)
    operator_receiver.status = 500
    created = [
        (await api.create_webhook(f"{receiver.url}/quiet{n}", ["quiet.x"]))["id"]
        for n in range(DISABLE_AFTER + 1)
    ]

    async def dead_lettered() -> bool:
        # Nothing else dead-letters meanwhile: these destinations get no events.
        after = (await _counter(operator_stack, DEAD_LETTERS)).get("webhook", 0)
        return after - before >= len(created)

    await eventually(dead_lettered, timeout_s=90, what="the created events dead-lettered")
    records = await _operator_records_since(services, since_ms)
    assert {r["data"]["destination_id"] for r in records} >= set(created)
    about_itself = [r for r in records if r["data"].get("tenant_id") == OPERATOR_TENANT]
    assert about_itself == []
    # Six dead letters in a row did not disable it: once it answers, events arrive again.
    assert await _counter(operator_stack, AUTO_DISABLED) == disabled_before
    operator_receiver.status = 200
    again = await api.create_webhook(f"{receiver.url}/again", ["quiet.x"])
    await eventually(
        lambda: operator_receiver.events(again["id"]), timeout_s=30, what="the next event"
    )
