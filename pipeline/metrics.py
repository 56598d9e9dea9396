"""Every Prometheus metric Herald exports, declared here once, and cheap helpers to record them.

One process, one registry: the API and every worker serve their own `/metrics` (the
default `prometheus_client.REGISTRY`, see pipeline/health.py), and Prometheus scrapes
each process as its own target. Prometheus adds `job` and `instance` to every series at
scrape time, so two workers never overwrite each other's numbers, and no metric here
uses those label names (they would be renamed `exported_*`). prometheus-client's
multiprocess mode is not needed: a Herald process is one Python process.

How to aggregate across processes in PromQL:

- counters and histograms are per process: `sum by (...) (rate(...))`;
- `herald_retry_held_records` and `herald_retry_oldest_due_age_seconds` describe what this
  worker holds: `sum` (held) and `max` (age) over instances; so does `herald_circuits_open`
  (each worker keeps its own circuit breakers): `sum`, or `max` for "any worker";
- `herald_consumer_lag_records`, `herald_dlq_records` and `herald_destinations` describe
  state shared by every worker (a consumer group's committed offsets, a topic, the
  destinations table), so every worker reports the same value: use `max`, never `sum`.

Labels are bounded: destination `type` (one per sink module), `outcome`, retry `tier`
("0" for the first attempt, then "1".."10"), HTTP `route` (the route template, e.g.
/v2/event-destinations/{destination_id}, "unmatched" for anything else), `method`, and
`status_class` ("2xx".."5xx"). Never an id.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cache

from prometheus_client import Counter, Gauge, Histogram

# Retry tiers are deliveries.retry.1..10 (topics.yaml); a larger attempt number is clamped.
MAX_TIER = 10
TIERS = tuple(str(n) for n in range(MAX_TIER + 1))
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"

_API_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DELIVERY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# From a prompt delivery up to the last retry of the default schedule (about 8.5 h).
_END_TO_END_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0,
)  # fmt: skip

# -- API ----------------------------------------------------------------------------------

EVENTS_PUBLISHED = Counter(
    "herald_events_published",
    "Events the API was asked to publish, by outcome: accepted (acknowledged by the broker), "
    "rejected (invalid), error (the broker did not take them). Replays and test events count.",
    ["outcome"],
)
API_REQUESTS = Counter(
    "herald_api_requests",
    "HTTP requests the API answered, by route template, method and status class.",
    ["route", "method", "status_class"],
)
API_REQUEST_DURATION = Histogram(
    "herald_api_request_duration_seconds",
    "Time from a request's arrival to its response, by route template and method.",
    ["route", "method"],
    buckets=_API_BUCKETS_S,
)

# -- both ---------------------------------------------------------------------------------

KAFKA_PRODUCE_ERRORS = Counter(
    "herald_kafka_produce_errors",
    "Writes to Kafka that failed (a send, or a batch of sends, the broker did not "
    "acknowledge), by topic.",
    ["topic"],
)

# -- worker: routing ----------------------------------------------------------------------

FILTER_EVALUATIONS = Counter(
    "herald_filter_evaluations",
    "Content filters the router evaluated (one per event and filtered destination the event's "
    "type matched), by outcome: matched (delivered), filtered_out (no delivery), error (the "
    "filter could not be evaluated: no delivery).",
    ["outcome"],
)

# -- worker: deliveries -------------------------------------------------------------------

DELIVERY_ATTEMPTS = Counter(
    "herald_delivery_attempts",
    "Delivery attempts, by destination type, outcome (success, failed) and retry tier.",
    ["type", "outcome", "tier"],
)
DELIVERY_LATENCY = Histogram(
    "herald_delivery_latency_seconds",
    "Time one delivery attempt took (publish to the destination), by destination type and "
    "outcome (a timeout and a success are not one distribution).",
    ["type", "outcome"],
    buckets=_DELIVERY_BUCKETS_S,
)
END_TO_END_LATENCY = Histogram(
    "herald_delivery_end_to_end_seconds",
    "From the event's created_at (the API accepted it) to its successful delivery, retries "
    "included, by destination type.",
    ["type"],
    buckets=_END_TO_END_BUCKETS_S,
)
DEAD_LETTERS = Counter(
    "herald_dead_letters",
    "Deliveries sent to the dead-letter topic (retries exhausted or a permanent failure).",
    ["type"],
)
DELIVERIES_DROPPED = Counter(
    "herald_deliveries_dropped",
    "Deliveries not attempted because their destination was deleted or is inactive.",
    ["reason"],
)
DELIVERIES_DEFERRED = Counter(
    "herald_deliveries_deferred",
    "Deliveries moved to a retry tier without an attempt, by destination type and reason "
    "(circuit_open: the destination's circuit breaker is open, and the delivery used up one "
    "of its retries; queue_full: its lane in this worker would have held it longer than "
    "sink_max_queue_wait_s, and no retry was used).",
    ["type", "reason"],
)
CIRCUIT_CHANGES = Counter(
    "herald_circuit_changes",
    "Destination circuit breakers that opened or closed in this worker, by destination type "
    "and the state entered (open, closed).",
    ["type", "state"],
)
DELIVERY_HANDLING_ERRORS = Counter(
    "herald_delivery_handling_errors",
    "Unexpected errors while handling a delivery: an error inside a sink is recorded as a "
    "retryable failed attempt; a record that cannot be handled at all is logged and skipped.",
)
INDEX_RECORDS_SKIPPED = Counter(
    "herald_index_records_skipped",
    "Records the indexer could not parse and skipped, by topic (the worker log has offsets).",
    ["topic"],
)
LOOP_RESTARTS = Counter(
    "herald_worker_loop_restarts",
    "Consume loops of the worker (delivery, index) that failed and were restarted, by loop; "
    "a loop that cannot be restarted stops the worker.",
    ["loop"],
)
AUTO_DISABLES = Counter(
    "herald_destinations_auto_disabled",
    "Destinations this worker disabled (410 Gone, or deliveries in a row dead-lettered).",
    ["type"],
)

# -- worker: sampled state ----------------------------------------------------------------

RETRY_HELD = Gauge(
    "herald_retry_held_records",
    "Retry-tier records this worker fetched and holds until they are due, by tier.",
    ["tier"],
)
RETRY_OLDEST_DUE_AGE = Gauge(
    "herald_retry_oldest_due_age_seconds",
    "How long the oldest held record of a tier has been due without being dispatched "
    "(0 when none is overdue): retries falling behind their schedule.",
    ["tier"],
)
CONSUMER_LAG = Gauge(
    "herald_consumer_lag_records",
    "Records not yet committed by a consumer group (agents, sinks, indexer), by topic: "
    "end offset minus committed offset, summed over the topic's partitions.",
    ["consumer", "topic"],
)
DELIVERY_PARTITIONS_STALLED = Gauge(
    "herald_delivery_partitions_stalled",
    "Delivery partitions this worker paused because sink_max_unfinished_per_partition "
    "records were fetched but not finished behind a stuck one (resumed at half).",
)
DELIVERIES_QUEUED = Gauge(
    "herald_deliveries_queued",
    "Deliveries fetched and waiting in their destinations' lanes for a slot in this worker "
    "(at sink_max_buffered the worker fetches nothing more until half have gone).",
)
CIRCUITS_OPEN = Gauge(
    "herald_circuits_open",
    "Destination circuit breakers open or half-open in this worker (state is per worker).",
)
DLQ_RECORDS = Gauge(
    "herald_dlq_records",
    "Records retained in the dead-letter topic (end minus beginning offsets).",
)
DESTINATIONS = Gauge(
    "herald_destinations",
    "Destinations in the worker's view of the destinations table, by status and type.",
    ["status", "type"],
)

EVENTS_ACCEPTED = EVENTS_PUBLISHED.labels(outcome="accepted")
EVENTS_REJECTED = EVENTS_PUBLISHED.labels(outcome="rejected")
EVENTS_FAILED = EVENTS_PUBLISHED.labels(outcome="error")


# -- recording (label children are cached: the label sets are bounded) --------------------


def tier_label(attempt: int) -> str:
    """The tier label of attempt number `attempt` (0 = the first attempt)."""
    return TIERS[min(max(attempt, 0), MAX_TIER)]


def status_class(status: int) -> str:
    """'2xx' for 204, and so on; 'other' outside 100..599."""
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


@cache
def _request_children(route: str, method: str, status: str) -> tuple[Counter, Histogram]:
    return (
        API_REQUESTS.labels(route=route, method=method, status_class=status),
        API_REQUEST_DURATION.labels(route=route, method=method),
    )


def record_request(route: str, method: str, status: int, duration_s: float) -> None:
    """Count one answered API request and observe its duration."""
    method = method if method in HTTP_METHODS else "OTHER"
    count, duration = _request_children(route, method, status_class(status))
    count.inc()
    duration.observe(duration_s)


@cache
def _attempt_children(destination_type: str, outcome: str, tier: str) -> tuple[Counter, Histogram]:
    return (
        DELIVERY_ATTEMPTS.labels(type=destination_type, outcome=outcome, tier=tier),
        DELIVERY_LATENCY.labels(type=destination_type, outcome=outcome),
    )


@cache
def _end_to_end(destination_type: str) -> Histogram:
    return END_TO_END_LATENCY.labels(type=destination_type)


def record_attempt(destination_type: str, outcome: str, attempt: int, latency_s: float) -> None:
    """Count one recorded delivery attempt and observe how long it took."""
    count, latency = _attempt_children(destination_type, outcome, tier_label(attempt))
    count.inc()
    latency.observe(latency_s)


def record_delivered(destination_type: str, created_at: str, now_s: float) -> None:
    """Observe the end-to-end latency of a delivered event (clock skew clamps to 0)."""
    created_s = datetime.fromisoformat(created_at).timestamp()
    _end_to_end(destination_type).observe(max(0.0, now_s - created_s))


_seen_destination_labels: set[tuple[str, str]] = set()


def observe_destinations(counts: Mapping[tuple[str, str], int]) -> None:
    """Set the destinations gauge from the count of each (status, type) (the view's
    `counts()`); a (status, type) gone since is 0."""
    for key in _seen_destination_labels - counts.keys():
        DESTINATIONS.labels(*key).set(0)
    for key, count in counts.items():
        DESTINATIONS.labels(*key).set(count)
    _seen_destination_labels.update(counts)


def observe_retry_backlog(held: Mapping[str, int], oldest_due_age_s: Mapping[str, float]) -> None:
    """Set the retry backlog gauges, by tier label."""
    for tier, count in held.items():
        RETRY_HELD.labels(tier=tier).set(count)
        RETRY_OLDEST_DUE_AGE.labels(tier=tier).set(oldest_due_age_s.get(tier, 0.0))


# Operator events (pipeline/operator_events.py): written to `events`, by type, and dropped
# (reason: buffer_full, rate_limited, broker_error) instead of holding anything up.
OPERATOR_EVENTS = Counter(
    "herald_operator_events_total", "Operator events written to the events topic", ["type"]
)
OPERATOR_EVENTS_DROPPED = Counter(
    "herald_operator_events_dropped_total",
    "Operator events dropped instead of written",
    ["reason"],
)

# -- sources (api/sources/: `herald worker --role ingest`) ---------------------------------

SOURCE_RECORDS = Counter(
    "herald_source_records",
    "Records taken from each configured source, by outcome: ingested (durable in events) or "
    "rejected (durable in the rejects topic, with why).",
    ["source", "outcome"],
)
SOURCE_REJECTS = Counter(
    "herald_source_rejects",
    "Source records sent to the rejects topic, by source and reason: not_json (not a JSON "
    "object), tenant (none, or one Herald does not know), invalid (what POST /v2/events "
    "answers with a 400 or 413), too_large (more than the events topic takes).",
    ["source", "reason"],
)

# -- ordered delivery per key (issue 16) ----------------------------------------------------

DELIVERIES_HELD_FOR_ORDER = Gauge(
    "herald_deliveries_held_for_order",
    "Deliveries fetched and waiting in this worker behind an earlier delivery of the same "
    "ordering key to a per_key destination (their offsets stay unfinished).",
)
