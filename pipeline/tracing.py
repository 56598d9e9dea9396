"""OpenTelemetry traces: one trace per event, carried in Kafka record headers.

The API starts (or continues, from the publisher's `traceparent`) a trace per publish
request and writes its context into the `events` records' headers; the router continues it
in a `herald.route` span per event and writes that span's context into each delivery's
headers; the runner continues it in a `herald.attempt` span per attempt, with a
`herald.record` span for writing the outcome, and a retry-tier record carries the context
of the attempt's record span, so the next attempt is its child in the same trace. Webhook
requests carry `traceparent` (the aiohttp client instrumentation's span of the request).

Off unless OTEL_TRACES_EXPORTER is otlp or zipkin (`configure`, once per process, by
api/cli.py): when off, `enabled()` is False and every hot path skips this module before it
builds anything, and no exporter is even imported. The
router and the runner only continue traces: a record without a valid context (written
before tracing was on, or by an API with it off) gets no span. Headers are only ever read
through `context_of`, which never raises, whatever a record or a tenant put there.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pipeline.settings import Settings

Headers = list[tuple[str, bytes]]
# Headers as a consumed record has them (aiokafka: a sequence of pairs; Faust: also a mapping).
RecordHeaders = Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None
Context = otel_context.Context

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# Span attributes an operator searches by (Jaeger: Tags `herald.event_id=evt_…`).
EVENT_ID = "herald.event_id"
DELIVERY_ID = "herald.delivery_id"
DESTINATION_ID = "herald.destination_id"

_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: trace.Tracer | None = None  # None: tracing is off
_provider: TracerProvider | None = None


def enabled() -> bool:
    """Whether this process traces (the hot paths ask before doing anything else)."""
    return _tracer is not None


def sampler(settings: Settings, *, edge: bool) -> Sampler:
    """The sampler OTEL_TRACES_SAMPLER names, always parent-based: a record's context
    decides downstream, so an event not sampled by the API gets no span anywhere.

    `edge` (the API): a publisher's `traceparent` marked sampled is sampled again by the
    root rule (the ratio is a hash of the trace id), so a publisher cannot make Herald
    trace every one of its events; one marked not sampled is not sampled.
    """
    name, ratio = settings.otel_traces_sampler, settings.otel_traces_sampler_arg
    root: Sampler
    if name.endswith("always_on"):
        root = ALWAYS_ON
    elif name.endswith("always_off"):
        root = ALWAYS_OFF
    else:
        root = TraceIdRatioBased(ratio)
    if edge:
        return ParentBased(root, remote_parent_sampled=root)
    return ParentBased(root)


def configure(
    settings: Settings, process: str, processor: SpanProcessor | None = None
) -> TracerProvider | None:
    """Turn tracing on for this process if the settings ask for it; `process` is `api` or
    `worker` (the default service name, and the API's sampling at the edge). `processor`
    replaces the exporter (tests: the SDK's in-memory exporter)."""
    global _tracer, _provider
    if settings.otel_traces_exporter == "none" and processor is None:
        return None
    resource = Resource.create({"service.name": settings.otel_service_name or f"herald-{process}"})
    provider = TracerProvider(sampler=sampler(settings, edge=process == "api"), resource=resource)
    provider.add_span_processor(processor or BatchSpanProcessor(_exporter(settings)))
    _provider, _tracer = provider, provider.get_tracer("herald")
    if process == "api":
        # Replaces aiohttp's Application class: call before the app is created.
        from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

        AioHttpServerInstrumentor().instrument(tracer_provider=provider)
    return provider


def _exporter(settings: Settings) -> SpanExporter:
    """The exporter OTEL_TRACES_EXPORTER names (imported only then: tracing off loads
    neither)."""
    if settings.otel_traces_exporter == "zipkin":
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        return ZipkinExporter(endpoint=settings.otel_exporter_zipkin_endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(
        endpoint=settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    )


def turn_off() -> None:
    """Back to no tracing (tests that turned it on)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def client_trace_configs() -> list[Any]:
    """The aiohttp client instrumentation for a sink's session: a span per request, whose
    `traceparent` the receiver gets; none when tracing is off (no hook per request)."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.aiohttp_client import create_trace_config

    return [create_trace_config(tracer_provider=_provider)]


# -- headers ---------------------------------------------------------------------------------


def context_of(headers: RecordHeaders) -> Context | None:
    """The trace context a record's headers carry; None if they carry none or one that is
    not valid W3C trace context (never raises: header values are anyone's bytes)."""
    carrier: dict[str, str] = {}
    try:
        pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
        for name, value in pairs:
            if name in (TRACEPARENT, TRACESTATE) and value is not None:
                carrier[name] = value.decode("ascii")
        if TRACEPARENT not in carrier:
            return None
        context = _PROPAGATOR.extract(carrier)
    except Exception:  # garbage in a header is no trace, never an error
        return None
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def current_headers() -> Headers:
    """The current trace context as record headers (none when there is none)."""
    return _injected(otel_context.get_current())


def run_in(context: Context | None) -> contextvars.Context | None:
    """A contextvars context in which `context` is the current trace context, for a task
    (asyncio's `create_task(..., context=…)`); None for no trace context."""
    if context is None:
        return None
    task_context = contextvars.copy_context()
    task_context.run(otel_context.attach, context)
    return task_context


# -- spans -----------------------------------------------------------------------------------


@contextlib.contextmanager
def span(
    name: str, attributes: dict[str, str | int], kind: SpanKind = SpanKind.INTERNAL
) -> Iterator[Span | None]:
    """A span child of the current context, current inside the block; None when tracing is
    off. An exception escaping the block marks the span as an error."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(name, kind=kind, attributes=attributes) as current:
        yield current


@contextlib.contextmanager
def publishing(attributes: dict[str, str | int]) -> Iterator[Headers | None]:
    """The API's `herald.publish` span around writing a request's events (a child of the
    request's span, itself a child of the publisher's `traceparent` if it sent one); yields
    the record headers that carry it, None when tracing is off."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span("herald.publish", kind=SpanKind.PRODUCER) as current:
        current.set_attributes(attributes)
        yield current_headers()


def sampled(context: Context) -> bool:
    """Whether the trace of `context` (from `context_of`) is sampled: only then do the
    router and the runner make spans of their own."""
    return bool(trace.get_current_span(context).get_span_context().trace_flags.sampled)


def start_route(headers: RecordHeaders, event: dict[str, Any]) -> tuple[Span, Headers | None]:
    """The router's span for one event, child of the context in its record's headers (not
    current: the router ends it once the event's deliveries are acknowledged), and the
    headers its deliveries carry. An unsampled event gets a span that records nothing and
    its deliveries carry its context on as it came (no span would ever show the difference).
    """
    assert _tracer is not None
    context = context_of(headers)
    if context is None:  # no trace to continue
        return trace.INVALID_SPAN, None
    if not sampled(context):
        return trace.INVALID_SPAN, _injected(context)
    span = _tracer.start_span(
        "herald.route",
        context,
        SpanKind.CONSUMER,
        attributes={EVENT_ID: str(event.get("id")), "herald.event_type": str(event.get("type"))},
    )
    return span, headers_of(span)


def headers_of(span: Span) -> Headers | None:
    """Record headers carrying `span`'s context; None for a span of no trace."""
    if not span.get_span_context().is_valid:
        return None
    return _injected(trace.set_span_in_context(span))


def _injected(context: Context) -> Headers:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context)
    return [(name, value.encode("ascii")) for name, value in carrier.items()]


def failed(current: Span | None, message: str) -> None:
    """Mark `current` (a span of `span()`, or None) as failed, with the attempt's error."""
    if current is not None and current.is_recording():
        current.set_status(Status(StatusCode.ERROR, message))
