"""Operator events without a broker: what is emitted and when, the per-destination rate and
the exhausted-retries window, what is dropped (and counted), the reserved tenant refused
everywhere a tenant id is given, and the operator sink's settings checked like a create."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from api import validation
from api.auth import KeyRing, hash_key
from api.errors import ApiError, RequestValidationError
from api.operator_sink import OperatorSinkInvalid, sink_fields
from api.tenants import tenant_fields
from pipeline.operator_events import (
    ATTEMPT_FAILED,
    CONSECUTIVE_FAILURES,
    CREATED,
    DISABLED,
    EXHAUSTED_RETRIES,
    OPERATOR_SINK_ID,
    OPERATOR_TENANT,
    Emitter,
    RunnerEvents,
    thresholds,
)
from pipeline.settings import ApiKey, Settings
from pipeline.signing import generate_secret
from pipeline.sinks.fields import FieldErrors
from tests.support import eventually
from tests.unit.test_auth import Tenants
from tests.unit.test_lanes import Clock

SECRET = generate_secret()


class Written:
    """A `send` that keeps what it is given (or fails, when told to)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.failing = False

    async def __call__(self, key: str, value: bytes) -> None:
        if self.failing:
            raise OSError("the broker is away")
        event = orjson.loads(value)
        assert key == event["id"]
        self.events.append(event)

    def types(self) -> list[str]:
        return [event["type"] for event in self.events]


def _destination(destination_id: str = "evtd_1", tenant: str = "acme") -> dict[str, Any]:
    return {
        "id": destination_id,
        "tenant": tenant,
        "type": "webhook",
        "name": "orders",
        "status": "active",
        "config": {"url": "https://example.com/hook?token=not-for-operators"},
        "sealed": "sealed-credentials",
    }


def _emitter(written: Written, clock: Clock, **limits: Any) -> Emitter:
    options = {"buffer": 100, "burst": 20, "per_hour": 60.0, "exhausted_window_s": 300.0}
    return Emitter(written, clock=clock, **(options | limits))


async def _drained(emitter: Emitter) -> None:
    """Once the sender has written what was buffered (its writes here never yield)."""
    await asyncio.sleep(0)  # the sender's first turn
    await eventually(lambda: emitter.buffered == 0, timeout_s=2, interval_s=0.001)


def _dropped(reason: str) -> float:
    value = REGISTRY.get_sample_value("herald_operator_events_dropped_total", {"reason": reason})
    return value or 0.0


@pytest.mark.parametrize(
    ("fractions", "disable_after", "expected"),
    [
        ([0.5, 0.8], 5, {3: 0.5, 4: 0.8}),
        ([0.8, 0.5], 10, {5: 0.5, 8: 0.8}),
        ([0.5, 0.8], 2, {1: 0.5}),  # 0.8 of 2 is the threshold itself: `disabled` says it
        ([0.5, 0.6], 2, {1: 0.5}),  # both at 1: once
        ([0.5], 0, {}),  # auto-disable off: nothing to warn of
    ],
)
def test_thresholds(fractions: list[float], disable_after: int, expected: dict[int, float]) -> None:
    assert thresholds(fractions, disable_after) == expected


async def test_an_event_names_the_destination_and_nothing_of_its_config() -> None:
    written, clock = Written(), Clock()
    emitter = _emitter(written, clock)
    emitter.emit(CREATED, _destination())
    await _drained(emitter)
    (event,) = written.events
    assert event["tenant"] == OPERATOR_TENANT
    assert event["type"] == CREATED
    assert event["data"] == {
        "tenant_id": "acme",
        "destination_id": "evtd_1",
        "destination_type": "webhook",
        "name": "orders",
        "status": "active",
    }
    assert set(event) == {"id", "object", "type", "data", "created_at", "tenant"}
    await emitter.aclose()


async def test_nothing_is_emitted_about_the_operator_sink_itself() -> None:
    written, clock = Written(), Clock()
    emitter = _emitter(written, clock)
    sink = _destination(OPERATOR_SINK_ID, OPERATOR_TENANT)
    emitter.emit(DISABLED, sink, reason="x")
    emitter.exhausted(sink, "retries exhausted")
    events = RunnerEvents(emitter, disable_after=5, fractions=[0.5], attempt_failed=True)
    events.dead_lettered(sink, "retries exhausted", 3)
    events.attempt_failed({"id": "evdl_1", "event": {"id": "evt_1"}}, sink, 500)
    assert emitter.buffered == 0
    await emitter.aclose()


async def test_each_destination_has_its_own_rate() -> None:
    written, clock = Written(), Clock()
    emitter = _emitter(written, clock, burst=2, per_hour=3600.0)  # one a second
    dropped = _dropped("rate_limited")
    for _ in range(3):
        emitter.emit(CREATED, _destination("evtd_flapping"))
    emitter.emit(CREATED, _destination("evtd_calm"))
    assert _dropped("rate_limited") == dropped + 1
    clock.now_s += 1.0  # one token back
    emitter.emit(CREATED, _destination("evtd_flapping"))
    emitter.emit(CREATED, _destination("evtd_flapping"))
    assert _dropped("rate_limited") == dropped + 2
    await _drained(emitter)
    ids = [event["data"]["destination_id"] for event in written.events]
    assert ids.count("evtd_flapping") == 3 and ids.count("evtd_calm") == 1
    await emitter.aclose()


async def test_a_full_buffer_drops_and_counts_instead_of_waiting() -> None:
    written, clock = Written(), Clock()
    emitter = _emitter(written, clock, buffer=2)
    dropped = _dropped("buffer_full")
    for n in range(3):  # no await between: the sender has not run yet
        emitter.emit(CREATED, _destination(f"evtd_{n}"))
    assert emitter.buffered == 2
    assert _dropped("buffer_full") == dropped + 1
    await _drained(emitter)
    assert len(written.events) == 2
    await emitter.aclose()


async def test_a_broker_error_drops_that_event_and_the_sender_goes_on() -> None:
    written, clock = Written(), Clock()
    emitter = _emitter(written, clock)
    dropped = _dropped("broker_error")
    written.failing = True
    emitter.emit(CREATED, _destination("evtd_lost"))
    await _drained(emitter)
    written.failing = False
    emitter.emit(CREATED, _destination("evtd_kept"))
    await _drained(emitter)
    assert _dropped("broker_error") == dropped + 1
    assert [event["data"]["destination_id"] for event in written.events] == ["evtd_kept"]
    await emitter.aclose()


async def test_exhausted_retries_once_per_window_with_the_rest_counted() -> None:
    written, clock = Written(), Clock()
    emitter = _emitter(written, clock, exhausted_window_s=300.0)
    destination = _destination()
    for _ in range(4):
        emitter.exhausted(destination, "retries exhausted after 4 attempts")
    await _drained(emitter)
    assert [event["data"]["count"] for event in written.events] == [1]
    clock.now_s += 299.0
    emitter.flush_windows()
    assert emitter.buffered == 0  # the window is still open
    clock.now_s += 1.0
    emitter.flush_windows()  # it ended with 3 not reported: one event, a new window
    emitter.flush_windows()
    await _drained(emitter)
    assert [event["data"]["count"] for event in written.events] == [1, 3]
    assert written.events[1]["data"]["window_s"] == 300.0
    clock.now_s += 300.0
    emitter.flush_windows()  # the new window ended with none: forgotten
    emitter.exhausted(destination, "permanent failure")  # the first of the next window
    await _drained(emitter)
    assert [event["data"]["count"] for event in written.events] == [1, 3, 1]
    assert written.events[2]["data"]["reason"] == "permanent failure"
    await emitter.aclose()


async def test_the_runner_warns_at_fractions_and_tells_attempts_only_if_asked() -> None:
    written, clock = Written(), Clock()
    emitter = _emitter(written, clock)
    quiet = RunnerEvents(emitter, disable_after=5, fractions=[0.5, 0.8])
    destination = _destination()
    for in_row in range(1, 5):
        quiet.dead_lettered(destination, "retries exhausted", in_row)
    quiet.attempt_failed({"id": "evdl_1", "event": {"id": "evt_1"}}, destination, 500)
    quiet.disabled(destination, "the last 5 deliveries exhausted their retries")
    await _drained(emitter)
    assert written.types() == [EXHAUSTED_RETRIES, CONSECUTIVE_FAILURES, CONSECUTIVE_FAILURES,
                               DISABLED]  # fmt: skip
    assert [e["data"].get("consecutive_failures") for e in written.events] == [None, 3, 4, None]
    chatty = RunnerEvents(emitter, attempt_failed=True)
    delivery = {"id": "evdl_1", "attempt": 2, "event": {"id": "evt_1", "type": "order.paid"}}
    chatty.attempt_failed(delivery, destination, 503)
    await _drained(emitter)
    assert written.events[-1]["type"] == ATTEMPT_FAILED
    assert written.events[-1]["data"]["response_status"] == 503
    assert written.events[-1]["data"]["attempt"] == 2
    assert RunnerEvents.off().attempt_failed(delivery, destination, 503) is None
    await emitter.aclose()


def test_no_configured_key_may_belong_to_the_operator_tenant() -> None:
    with pytest.raises(ValidationError, match="dev_tenant"):
        Settings(dev_tenant=OPERATOR_TENANT)
    key = ApiKey(key_sha256=hash_key("sk"), tenant=OPERATOR_TENANT)
    with pytest.raises(ValidationError, match=r"api_keys\[0\]\.tenant"):
        Settings(api_keys=[key])
    with pytest.raises(ValidationError, match="between 0 and 1"):
        Settings(operator_events_failure_fractions=[0.5, 1.0])


def test_no_tenant_id_given_to_the_api_may_be_the_operator_tenant() -> None:
    errors = FieldErrors()
    assert validation.tenant_id(errors, OPERATOR_TENANT, "id") is None
    assert validation.tenant_id(errors, "acme", "id") == "acme"
    assert list(errors.by_field) == ["id"]
    with pytest.raises(RequestValidationError) as caught:
        tenant_fields({"id": OPERATOR_TENANT, "name": "x"}, create=True)
    assert list(caught.value.errors) == ["id"]
    platform = ApiKey(key_sha256=hash_key("sk_platform"), role="platform")
    ring = KeyRing(Settings(dev_api_key="sk_dev", api_keys=[platform]), Tenants())
    for key, status in (("sk_dev", 403), ("sk_platform", 404)):
        with pytest.raises(ApiError) as refused:
            ring.authenticate(f"Bearer {key}", OPERATOR_TENANT)
        assert (refused.value.status, refused.value.field) == (status, "Herald-Tenant")


def _sink(**given: Any) -> Settings:
    body = {"name": "on-call", "events": ["*"], **given}
    return Settings(operator_sink=orjson.dumps(body).decode())


HOOK = {"url": "https://x.test/h", "secret": SECRET}


def test_the_operator_sink_is_checked_like_a_create_with_the_field_named() -> None:
    assert sink_fields(Settings()) is None
    fields = sink_fields(_sink(webhook=HOOK))
    assert fields is not None
    assert (fields["id"], fields["type"], fields["events"]) == (OPERATOR_SINK_ID, "webhook", ["*"])
    cases = [
        ("{", "operator_sink: is not valid JSON"),
        (_sink(webhook={**HOOK, "url": "ftp://x"}), "operator_sink.webhook.url"),
        (_sink(webhook={"url": HOOK["url"]}), "operator_sink.webhook.secret"),
        (_sink(id="evtd_mine", webhook=HOOK), "operator_sink.id"),
        (_sink(name=None, webhook=HOOK), "operator_sink.name"),
        (_sink(events=None, webhook=HOOK), "operator_sink.events"),
    ]
    for given, named in cases:
        settings = given if isinstance(given, Settings) else Settings(operator_sink=given)
        with pytest.raises(OperatorSinkInvalid, match=named.replace(".", r"\.")) as caught:
            sink_fields(settings)
        assert SECRET not in str(caught.value)
