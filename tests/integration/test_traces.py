"""One event's trace across the real processes (issue 17): the session stack's API and worker
are restarted with tracing on, exporting over OTLP/HTTP to a receiver in this test (a real
HTTP server decoding the export requests' protobuf, bench/receiver.py's `otlp_spans`), and
started again without it afterwards.

An event published with a `traceparent` to a webhook that fails once: its spans form one
trace under the publisher's span (the API's request and publish spans, the router's route
span, attempt 1 failed, its record, attempt 2 under that record, its record), and both
webhook requests carried a `traceparent` of that trace. A garbage `traceparent` is no
error: the event is delivered in a trace of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from bench.receiver import otlp_spans
from tests.integration.api_client import Api
from tests.integration.conftest import (
    API_PORT,
    WORKER_PORT,
    Stack,
    _start_herald,
    _wait_ready,
)
from tests.support import Received, Receiver, eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PUBLISHER_SPAN_ID = "00f067aa0ba902b7"


class _OtlpReceiver:
    """A receiver (tests/support.py) of OTLP/HTTP exports (POST /v1/traces), served from a
    thread of its own so that it outlives each test's event loop."""

    def __init__(self) -> None:
        self._receiver = Receiver()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._receiver.start(), self._loop).result(timeout=30)

    @property
    def url(self) -> str:
        return self._receiver.url

    @property
    def spans(self) -> list[dict[str, Any]]:
        """Every span exported so far."""
        exports = [r.body for r in list(self._receiver.requests) if r.path == "/v1/traces"]
        return [span for body in exports for span in otlp_spans(body)]

    def stop(self) -> None:
        stopping = asyncio.run_coroutine_threadsafe(self._receiver.stop(), self._loop)
        stopping.result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["trace_id"] == trace_id]


class _FailsOnce(Receiver):
    """A webhook receiver that answers 503 to its first request and 200 to the rest."""

    async def _handle(self, request: web.Request) -> web.Response:
        self.status = 503 if not self.requests else 200
        return await super()._handle(request)


def _restart(stack: Stack, env: dict[str, str]) -> None:
    """Stop the stack's worker and API (SIGTERM) and start them again with `env`."""
    for role, port in (("worker", WORKER_PORT), ("api", API_PORT)):
        process = stack.processes[role]
        process.terminate()
        process.wait(timeout=60)
        log = stack.logs / f"{role}.log"
        stack.processes[role] = _start_herald(role, port, env, log)
        _wait_ready(stack.processes[role], port, log, timeout_s=180)


@pytest.fixture(scope="module")
def exported(stack: Stack) -> Iterator[_OtlpReceiver]:
    """The stack traced (every event sampled), its spans exported to the returned receiver,
    for this module's tests; the stack's own processes again afterwards."""
    receiver = _OtlpReceiver()
    receiver.start()
    traced = {
        **stack.env,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # the SDK's own: export every 0.1 s, not 5 s
    }
    try:
        _restart(stack, traced)
        yield receiver
    finally:
        try:
            _restart(stack, stack.env)
        finally:
            receiver.stop()


async def _publish(api: Api, traceparent: str) -> str:
    async with api.session.post(
        "/v2/events", json={"type": "traced.one", "data": {}}, headers={"traceparent": traceparent}
    ) as response:
        body = await response.json()
        assert response.status == 202, body
        return str(body["id"])


def _by_name(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    named: dict[str, list[dict[str, Any]]] = {}
    for span in sorted(spans, key=lambda s: s["start_ns"]):
        named.setdefault(span["name"], []).append(span)
    return named


def _traceparent_of(request: Received) -> list[str]:
    return request.headers.get("traceparent", "").split("-")


async def test_one_event_with_one_retry_is_one_trace(exported: _OtlpReceiver, api: Api) -> None:
    receiver = await _FailsOnce().start()
    try:
        await api.create_webhook(f"{receiver.url}/traced", ["traced.*"])
        event_id = await _publish(api, f"00-{TRACE_ID}-{PUBLISHER_SPAN_ID}-01")
        await eventually(lambda: len(receiver.requests) >= 2, timeout_s=60, what="the retry")
        named = await eventually(
            lambda: (
                (n := _by_name(exported.of_trace(TRACE_ID)))
                and len(n.get("herald.record", [])) == 2
                and n
            ),
            timeout_s=30,
            what="the second attempt's record span",
        )
    finally:
        await receiver.stop()

    ids = {s["span_id"]: s for s in exported.of_trace(TRACE_ID)}
    [server] = named["POST /v2/events"]
    [publish] = named["herald.publish"]
    [route] = named["herald.route"]
    first, second = named["herald.attempt"]
    record_first, record_second = named["herald.record"]
    assert server["service"] == "herald-api" and server["parent_id"] == PUBLISHER_SPAN_ID
    assert publish["parent_id"] == server["span_id"]
    assert route["service"] == "herald-worker" and route["parent_id"] == publish["span_id"]
    assert first["parent_id"] == route["span_id"]
    assert first["status"] == 2  # ERROR: the 503
    assert first["attributes"]["herald.attempt"] == "1"
    assert record_first["parent_id"] == first["span_id"]
    assert second["parent_id"] == record_first["span_id"]
    assert second["attributes"]["herald.attempt"] == "2" and second["status"] != 2
    assert record_second["parent_id"] == second["span_id"]
    for span in (publish, route, first, second):
        assert span["attributes"]["herald.event_id"] == event_id
    # Each webhook request carried the trace: its parent is the request's span, a child of
    # that attempt (the aiohttp client instrumentation's).
    for request, attempt in zip(receiver.requests, (first, second), strict=True):
        version, trace_id, parent_id, flags = _traceparent_of(request)
        assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
        assert ids[parent_id]["parent_id"] == attempt["span_id"]


@pytest.mark.parametrize(
    "traceparent", ["garbage", f"00-{'0' * 32}-{PUBLISHER_SPAN_ID}-01", "00-" + "z" * 200]
)
async def test_a_garbage_traceparent_is_a_trace_of_its_own(
    exported: _OtlpReceiver, api: Api, receiver: Receiver, traceparent: str
) -> None:
    await api.create_webhook(f"{receiver.url}/garbage", ["garbage.*"])
    async with api.session.post(
        "/v2/events", json={"type": "garbage.one", "data": {}}, headers={"traceparent": traceparent}
    ) as response:
        assert response.status == 202, await response.text()
        event_id = (await response.json())["id"]
    await eventually(lambda: receiver.requests, timeout_s=30, what="the delivery")
    route = await eventually(
        lambda: [
            s
            for s in exported.spans
            if s["name"] == "herald.route" and s["attributes"].get("herald.event_id") == event_id
        ],
        timeout_s=30,
        what="the event's route span",
    )
    assert route[0]["trace_id"] != "0" * 32
    assert receiver.requests[0].headers["traceparent"].split("-")[1] == route[0]["trace_id"]
