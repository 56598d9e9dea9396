"""Trace context through Kafka record headers (pipeline/tracing.py): whatever a header holds,
reading it never raises; a traced delivery's attempts and records continue the event's
trace, a retry-tier record carries it on, and an unsampled event makes no span.

The router's and the runner's own functions run here with the SDK's in-memory exporter,
the runner's against the stand-ins of test_dispatch (tests/integration/test_traces.py
follows one event through the real processes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline import delivery_record, tracing
from pipeline.settings import Settings
from pipeline.sinks.base import RetryableError
from pipeline.topics import retry_topic
from tests.support import Receiver
from tests.unit import test_dispatch
from tests.unit.test_dispatch import TP, Producer, Publisher, _dispatcher, _drained

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()
NOT_SAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-00".encode()
EVENT = {"id": "evt_1", "type": "a.b", "tenant": "t"}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, every span kept in memory."""
    exporter = InMemorySpanExporter()
    tracing.configure(Settings(), "worker", SimpleSpanProcessor(exporter))
    yield exporter
    tracing.turn_off()


GARBAGE: list[Any] = [
    None,
    [],
    [("herald-due-ms", b"1")],
    [("traceparent", None)],
    [("traceparent", b"\xff\xfe\x00")],
    [("traceparent", "not bytes")],
    [("traceparent", b"garbage")],
    [("traceparent", b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-01")],  # the invalid ids
    [("traceparent", b"00-" + b"g" * 32 + b"-00f067aa0ba902b7-01")],
    [("traceparent", SAMPLED + b"-and-more" * 1000)],
    [("traceparent",)],
    [("traceparent", b"x", b"y")],
    {"traceparent": b"garbage"},
    "traceparent",
    42,
]


@pytest.mark.parametrize("headers", GARBAGE)
def test_headers_without_a_valid_context_are_no_context(headers: Any) -> None:
    assert tracing.context_of(headers) is None


@pytest.mark.parametrize("headers", [[("traceparent", SAMPLED)], {"traceparent": SAMPLED}])
def test_a_valid_traceparent_is_the_context(headers: Any) -> None:
    context = tracing.context_of(headers)
    assert context is not None
    assert trace.get_current_span(context).get_span_context().trace_id == int(TRACE_ID, 16)


@pytest.mark.parametrize("headers", GARBAGE)
def test_the_router_routes_an_event_with_garbage_headers_untraced(
    spans: InMemorySpanExporter, headers: Any
) -> None:
    span, carried = tracing.start_route(headers, EVENT)
    assert carried is None
    span.end()
    assert spans.get_finished_spans() == ()


def test_the_route_span_continues_the_event_and_its_deliveries_carry_it(
    spans: InMemorySpanExporter,
) -> None:
    span, carried = tracing.start_route([("traceparent", SAMPLED)], EVENT)
    headers = dict(carried or [])
    span.end()
    [route] = spans.get_finished_spans()
    assert route.name == "herald.route"
    assert route.attributes is not None and route.attributes[tracing.EVENT_ID] == "evt_1"
    assert route.parent is not None and route.parent.span_id == 0x00F067AA0BA902B7
    assert headers["traceparent"] == f"00-{TRACE_ID}-{route.context.span_id:016x}-01".encode()


def test_an_unsampled_event_makes_no_span_but_its_deliveries_keep_its_trace_id(
    spans: InMemorySpanExporter,
) -> None:
    span, carried = tracing.start_route([("traceparent", NOT_SAMPLED)], EVENT)
    headers = dict(carried or [])
    span.end()
    assert spans.get_finished_spans() == ()
    assert headers["traceparent"].startswith(f"00-{TRACE_ID}-".encode())
    assert headers["traceparent"].endswith(b"-00")


class _HeadersProducer(Producer):
    """test_dispatch's producer, keeping each record's headers too."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[tuple[str, dict[str, bytes]]] = []

    async def send_and_wait(self, topic: str, value: bytes, *, key: bytes, headers: Any) -> None:
        self.headers.append((topic, dict(headers or [])))
        await super().send_and_wait(topic, value, key=key, headers=headers)


def _record(attempt: int = 0, headers: Any = ()) -> ConsumerRecord[bytes, bytes]:
    """test_dispatch's delivery record (of event evt_0), with a real acceptance time and
    `headers`."""
    delivery = delivery_record.decode(test_dispatch._record(0, attempt).value)
    delivery["event"]["created_at"] = "2026-12-02T12:00:00.000Z"
    value = delivery_record.encode(delivery)
    return ConsumerRecord("deliveries", 0, 0, 0, 0, b"t/evtd_1", value, None, 0, 0, headers)


async def _one_attempt(
    publisher: Publisher, headers: dict[str, bytes], attempt: int = 0
) -> dict[str, bytes]:
    """Dispatch one delivery record with `headers`; the headers of its retry-tier record."""
    producer = _HeadersProducer()
    dispatcher, finished = _dispatcher(producer, publisher)
    dispatcher.arrived(TP, _record(attempt, list(headers.items())))
    await _drained(dispatcher)
    assert finished == [0]
    tiers = [h for topic, h in producer.headers if topic == retry_topic(1)]
    return tiers[0] if tiers else {}


async def test_a_failed_attempt_and_its_retry_continue_the_events_trace(
    spans: InMemorySpanExporter,
) -> None:
    retry_headers = await _one_attempt(
        Publisher(RetryableError("HTTP 503")), {"traceparent": SAMPLED}
    )
    assert "herald-due-ms" in retry_headers and "traceparent" in retry_headers
    await _one_attempt(Publisher(), retry_headers, attempt=1)

    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans.get_finished_spans():
        assert span.context.trace_id == int(TRACE_ID, 16)
        by_name.setdefault(span.name, []).append(span)
    first, second = by_name["herald.attempt"]
    record_first, record_second = by_name["herald.record"]
    assert first.parent is not None and first.parent.span_id == 0x00F067AA0BA902B7
    assert first.status.status_code == trace.StatusCode.ERROR
    assert first.attributes is not None and first.attributes["herald.attempt"] == 1
    assert record_first.parent is not None and record_first.parent.span_id == first.context.span_id
    # The retry was written inside the first record span: the second attempt is its child.
    assert second.parent is not None and second.parent.span_id == record_first.context.span_id
    assert second.status.status_code == trace.StatusCode.UNSET
    assert second.attributes is not None and second.attributes["herald.attempt"] == 2
    assert second.attributes[tracing.EVENT_ID] == "evt_0"
    assert record_second.parent is not None
    assert record_second.parent.span_id == second.context.span_id


async def test_an_unsampled_delivery_makes_no_span_and_its_retry_stays_unsampled(
    spans: InMemorySpanExporter,
) -> None:
    retry_headers = await _one_attempt(
        Publisher(RetryableError("HTTP 503")), {"traceparent": NOT_SAMPLED}
    )
    assert spans.get_finished_spans() == ()
    assert retry_headers["traceparent"].startswith(f"00-{TRACE_ID}-".encode())
    assert retry_headers["traceparent"].endswith(b"-00")


@pytest.mark.parametrize("headers", GARBAGE[:13])
async def test_a_delivery_with_garbage_headers_is_attempted_untraced(
    spans: InMemorySpanExporter, headers: Any
) -> None:
    publisher = Publisher()
    producer = _HeadersProducer()
    dispatcher, finished = _dispatcher(producer, publisher)
    dispatcher.arrived(TP, _record(0, headers))
    await _drained(dispatcher)
    assert finished == [0] and publisher.calls == 1
    assert spans.get_finished_spans() == ()


async def test_with_tracing_off_a_retry_record_carries_no_trace_header() -> None:
    assert not tracing.enabled()
    retry_headers = await _one_attempt(
        Publisher(RetryableError("HTTP 503")), {"traceparent": SAMPLED}
    )
    assert set(retry_headers) == {"herald-due-ms"}


async def test_with_tracing_off_no_header_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The off path builds nothing per delivery: the runner never even reads the headers."""

    def refuse(headers: Any) -> None:
        raise AssertionError("trace headers read with tracing off")

    monkeypatch.setattr(tracing, "context_of", refuse)
    assert not tracing.enabled()
    publisher = Publisher()
    dispatcher, finished = _dispatcher(_HeadersProducer(), publisher)
    dispatcher.arrived(TP, _record(0, [("traceparent", SAMPLED)]))
    await _drained(dispatcher)
    assert finished == [0] and publisher.calls == 1


async def test_the_zipkin_exporter_sends_v2_json_to_the_standard_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_TRACES_EXPORTER=zipkin: the spans go as Zipkin v2 JSON to
    OTEL_EXPORTER_ZIPKIN_ENDPOINT (a real HTTP server here; Zipkin's own takes the same)."""
    receiver = await Receiver().start()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    monkeypatch.setenv("OTEL_EXPORTER_ZIPKIN_ENDPOINT", f"{receiver.url}/api/v2/spans")
    provider = tracing.configure(Settings(), "worker")
    assert provider is not None
    try:
        with tracing.span("herald.attempt", {tracing.EVENT_ID: "evt_1"}):
            pass
        # The exporter posts from the processor's thread with a blocking client.
        assert await asyncio.to_thread(provider.force_flush, 10_000)
    finally:
        tracing.turn_off()
        await receiver.stop()
    [sent] = receiver.bodies("/api/v2/spans")
    [span] = sent
    assert span["name"] == "herald.attempt"
    assert span["localEndpoint"]["serviceName"] == "herald-worker"
    assert span["tags"][tracing.EVENT_ID] == "evt_1"
    assert len(span["traceId"]) == 32
