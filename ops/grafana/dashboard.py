"""Herald's Grafana dashboard as code: builds it with the Grafana Foundation SDK and writes
ops/grafana/dashboards/herald.json, the file docker-compose.yml provisions.

Run `.venv/bin/python ops/grafana/dashboard.py` after changing a panel here, and commit both
files: tests/unit/test_dashboard.py regenerates the JSON and fails if it differs from the
committed one, and checks that every query names a metric pipeline/metrics.py exports.
The SDK is in the `test` extra (`make test` installs it); its version is pinned to the
Grafana release docker-compose.yml runs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import common, dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models.common import StackingMode

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "herald.json"
# The datasource ops/grafana/provisioning/datasources gives this uid.
PROMETHEUS = dashboard_models.DataSourceRef(type_val="prometheus", uid="prometheus")
RATE = "[$__rate_interval]"
PANEL_HEIGHT = 8


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel and its legend."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Chart:
    """A time-series panel: its place on the 24-column grid, unit and queries."""

    id: int
    title: str
    description: str
    x: int
    width: int
    unit: str
    queries: list[Query]
    stacked: bool = False
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Section:
    """A row header and the charts under it (one line of the grid, or two)."""

    id: int
    title: str
    charts: list[Chart]


def _quantiles(series: str, by: str, legend: str, matcher: str = "") -> list[Query]:
    return [
        Query(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({series}{matcher}{RATE})))",
            f"{legend} p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


SECTIONS = [
    Section(1, "Throughput", [
        Chart(2, "Events published /s",
              "Events the API was asked to publish, by outcome (accepted, rejected, error).",
              0, 8, "reqps",
              [Query(f"sum by (outcome) (rate(herald_events_published_total{RATE}))",
                     "{{outcome}}")]),
        Chart(3, "Deliveries /s by outcome",
              "Delivery attempts per second, by outcome, across every worker.",
              8, 8, "reqps",
              [Query(f"sum by (outcome) (rate(herald_delivery_attempts_total{RATE}))",
                     "{{outcome}}")]),
        Chart(4, "Delivery success rate",
              "Share of delivery attempts that succeeded, by destination type.",
              16, 8, "percentunit",
              [Query(f'sum by (type) (rate(herald_delivery_attempts_total{{outcome="success"}}'
                     f"{RATE})) / sum by (type) (rate(herald_delivery_attempts_total{RATE}))",
                     "{{type}}")],
              min=0, max=1),
    ]),
    Section(5, "Latency", [
        Chart(6, "Delivery latency by type (successes)",
              "One attempt, publish to the destination: p50, p95, p99.",
              0, 12, "s",
              _quantiles("herald_delivery_latency_seconds_bucket", "type", "{{type}}",
                         '{outcome="success"}')),
        Chart(7, "End-to-end latency by type",
              "From the event's created_at to its successful delivery, retries included: "
              "p50, p95, p99.",
              12, 12, "s",
              _quantiles("herald_delivery_end_to_end_seconds_bucket", "type", "{{type}}")),
    ]),
    Section(8, "Retries and dead letters", [
        Chart(9, "Retry backlog by tier",
              "Retry-tier records held by the workers until they are due.",
              0, 8, "short",
              [Query("sum by (tier) (herald_retry_held_records)", "tier {{tier}}")],
              stacked=True),
        Chart(10, "Retries overdue by tier",
              "How long the oldest held record of a tier has been due without being "
              "dispatched.",
              8, 8, "s",
              [Query("max by (tier) (herald_retry_oldest_due_age_seconds)", "tier {{tier}}")]),
        Chart(11, "Dead letters",
              "Deliveries sent to the dead-letter topic per second, by type, and the records "
              "the DLQ holds.",
              16, 8, "short",
              [Query(f"sum by (type) (rate(herald_dead_letters_total{RATE}))", "{{type}} /s"),
               Query("max(herald_dlq_records)", "in DLQ")]),
    ]),
    Section(12, "Kafka", [
        Chart(13, "Consumer lag by topic",
              "Records past each consumer group's committed offsets (every worker reports the "
              "group's lag: max).",
              0, 8, "short",
              [Query("max by (consumer, topic) (herald_consumer_lag_records)",
                     "{{consumer}} {{topic}}")]),
        Chart(14, "Kafka produce errors /s",
              "Writes the broker did not acknowledge, by topic.",
              8, 8, "short",
              [Query(f"sum by (topic) (rate(herald_kafka_produce_errors_total{RATE}))",
                     "{{topic}}")]),
        Chart(15, "Deliveries not attempted /s",
              "Dropped because the destination was deleted or is inactive; handling errors "
              "(retried after a restart or rebalance).",
              16, 8, "short",
              [Query(f"sum by (reason) (rate(herald_deliveries_dropped_total{RATE}))",
                     "dropped: {{reason}}"),
               Query(f"sum(rate(herald_delivery_handling_errors_total{RATE}))",
                     "handling errors")]),
    ]),
    Section(16, "API", [
        Chart(17, "API requests /s by route",
              "Requests answered, by route template and method.",
              0, 8, "reqps",
              [Query(f"sum by (method, route) (rate(herald_api_requests_total{RATE}))",
                     "{{method}} {{route}}")]),
        Chart(18, "API error rate by route",
              "Share of requests answered 5xx (server errors) and 4xx (client errors), by "
              "route.",
              8, 8, "percentunit",
              [Query(f'sum by (route) (rate(herald_api_requests_total{{status_class="{c}"}}'
                     f"{RATE})) / sum by (route) (rate(herald_api_requests_total{RATE}))",
                     f"{c} {{{{route}}}}")
               for c in ("5xx", "4xx")],
              min=0),
        Chart(19, "API latency p95 by route",
              "Time from a request's arrival to its response.",
              16, 8, "s",
              [Query("histogram_quantile(0.95, sum by (le, method, route) "
                     f"(rate(herald_api_request_duration_seconds_bucket{RATE})))",
                     "{{method}} {{route}}")]),
    ]),
    Section(20, "Destinations", [
        Chart(21, "Destinations by status",
              "Destinations in the workers' view of the destinations table, by status and "
              "type.",
              0, 12, "short",
              [Query("max by (status, type) (herald_destinations)", "{{status}} {{type}}")],
              stacked=True),
        Chart(22, "Auto-disabled destinations",
              "Destinations the workers disabled in the last hour (410 Gone, or deliveries in "
              "a row dead-lettered).",
              12, 12, "short",
              [Query("sum by (type) (increase(herald_destinations_auto_disabled_total[1h]))",
                     "{{type}}")]),
        Chart(23, "Deliveries deferred without an attempt /s",
              "Moved to a retry tier without a request: circuit_open (the destination's "
              "circuit breaker is open; the delivery used up one scheduled retry) and "
              "queue_full (its lane would have held it past sink_max_queue_wait_s; no retry "
              "used).",
              0, 12, "short",
              [Query(f"sum by (reason, type) (rate(herald_deliveries_deferred_total{RATE}))",
                     "{{reason}}: {{type}}")]),
        Chart(24, "Destination circuits",
              "Circuit breakers that opened (retryable failures in a row, or a failed probe) "
              "or closed (a success) in the last hour, and how many are open now, summed over "
              "workers (each holds its own).",
              12, 12, "short",
              [Query("sum by (state, type) (increase(herald_circuit_changes_total[1h]))",
                     "{{state}}: {{type}}"),
               Query("sum(herald_circuits_open)", "open now (all workers)"),
               Query("sum(herald_deliveries_queued)",
                     "deliveries waiting in lanes (all workers)")]),
        Chart(25, "Content filter evaluations /s by outcome",
              "Events the router checked against a destination's content filter, summed over "
              "workers: matched (delivered), filtered_out (no delivery), error (the filter "
              "could not be evaluated on the event: no delivery).",
              0, 12, "ops",
              [Query(f"sum by (outcome) (rate(herald_filter_evaluations_total{RATE}))",
                     "{{outcome}}")]),
    ]),
    Section(26, "Flow control and workers", [
        Chart(27, "Deliveries waiting in lanes by worker",
              "Deliveries fetched and waiting in their destinations' lanes for a slot, per "
              "worker; at sink_max_buffered a worker fetches nothing more until half have "
              "gone. A slow or rate-limited destination's backlog beyond "
              "sink_max_queue_wait_s is put off to a retry tier instead (deferred, above).",
              0, 8, "short",
              [Query("sum by (instance) (herald_deliveries_queued)", "{{instance}}")]),
        Chart(28, "Open circuits and stalled partitions by worker",
              "Destination circuit breakers open or half-open in each worker (state is per "
              "worker), and delivery partitions it paused because "
              "sink_max_unfinished_per_partition records were unfinished behind a stuck one.",
              8, 8, "short",
              [Query("sum by (instance) (herald_circuits_open)", "circuits open: {{instance}}"),
               Query("sum by (instance) (herald_delivery_partitions_stalled)",
                     "partitions stalled: {{instance}}")]),
        Chart(29, "Retry attempts /s by tier",
              "Attempts of deliveries on their retry schedule (tier 1 and up; tier 0 is the "
              "first attempt), by tier and outcome: a tier that keeps failing is a receiver "
              "still down.",
              16, 8, "ops",
              [Query('sum by (tier, outcome) (rate(herald_delivery_attempts_total{tier!="0"}'
                     f"{RATE}))", "tier {{tier}} {{outcome}}")]),
        Chart(30, "Worker loop restarts and skipped index records",
              "Consume loops restarted after a failure, by loop, and records the indexer "
              "could not parse and skipped, by topic, in the last hour (both alert).",
              0, 24, "short",
              [Query("sum by (loop) (increase(herald_worker_loop_restarts_total[1h]))",
                     "restarts: {{loop}}"),
               Query("sum by (topic) (increase(herald_index_records_skipped_total[1h]))",
                     "skipped: {{topic}}")]),
    ]),
    Section(60, "Operator events", [
        Chart(61, "Operator events /s by type, and drops",
              "Operator events written to the events topic for the operator sink, by type, "
              "and those dropped instead (buffer_full, rate_limited: a destination past its "
              "operator_events_burst, broker_error), summed over processes.",
              0, 24, "ops",
              [Query(f"sum by (type) (rate(herald_operator_events_total{RATE}))", "{{type}}"),
               Query(f"sum by (reason) (rate(herald_operator_events_dropped_total{RATE}))",
                     "dropped: {{reason}}")]),
    ]),
    Section(70, "Sources", [
        Chart(71, "Source records /s by source and outcome",
              "Records the ingest role took from each configured source (a platform's Kafka "
              "topic or RabbitMQ queue): ingested (durable in events) or rejected (durable in "
              "the rejects topic, with why).",
              0, 12, "ops",
              [Query(f"sum by (source, outcome) (rate(herald_source_records_total{RATE}))",
                     "{{source}} {{outcome}}")]),
        Chart(72, "Source rejects /s by source and reason",
              "Invalid source records sent to the rejects topic: not_json, tenant (none, or "
              "unknown), invalid (what POST /v2/events refuses), too_large.",
              12, 12, "ops",
              [Query(f"sum by (source, reason) (rate(herald_source_rejects_total{RATE}))",
                     "{{source}} {{reason}}")]),
    ]),
    # Ordered delivery per key (issue 16).
    Section(80, "Ordered delivery", [
        Chart(81, "Deliveries held behind their key by worker",
              "Deliveries to per_key destinations waiting behind an earlier delivery of the "
              "same ordering key (its retry, or its turn in the lane). They stay unfinished, "
              "so a key held for long pins its partition's committed offset; at "
              "sink_max_unfinished_per_partition the partition pauses (stalled, above).",
              0, 24, "short",
              [Query("sum by (instance) (herald_deliveries_held_for_order)", "{{instance}}")]),
    ]),
]  # fmt: skip


def _chart(chart: Chart, y: int) -> timeseries.Panel:
    stacking = StackingMode.NORMAL if chart.stacked else StackingMode.NONE
    panel = (
        timeseries.Panel()
        .id(chart.id)
        .title(chart.title)
        .description(chart.description)
        .datasource(PROMETHEUS)
        .grid_pos(dashboard_models.GridPos(x=chart.x, y=y, w=chart.width, h=PANEL_HEIGHT))
        .unit(chart.unit)
        .draw_style(common_models.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(20 if chart.stacked else 5)
        .stacking(common.StackingConfig().mode(stacking).group("A"))
        .show_points(common_models.VisibilityMode.NEVER)
        .legend(
            common.VizLegendOptions()
            .display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common.VizTooltipOptions()
            .mode(common_models.TooltipDisplayMode.MULTI)
            .sort(common_models.SortOrder.DESCENDING)
        )
    )
    if chart.min is not None:
        panel.min(chart.min)
    if chart.max is not None:
        panel.max(chart.max)
    for ref, query in zip("ABCDEFGH", chart.queries, strict=False):
        panel.with_target(
            prometheus.Dataquery()
            .ref_id(ref)
            .datasource(PROMETHEUS)
            .expr(query.expr)
            .legend_format(query.legend)
        )
    return panel


def build() -> dashboard.Dashboard:
    """The dashboard: every section's row, then its charts, laid out top to bottom."""
    board = (
        dashboard.Dashboard("Herald")
        .uid("herald")
        .description(
            "Herald API and workers: throughput, delivery outcomes and latency, retries, dead "
            "letters, Kafka lag, API traffic, destinations, flow control. Generated by "
            "ops/grafana/dashboard.py; every metric is declared in pipeline/metrics.py."
        )
        .tags(["herald"])
        .readonly()
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .annotations([])
        .variables([])
    )
    y = 0
    for section in SECTIONS:
        board.with_row(
            dashboard.Row(section.title)
            .id(section.id)
            .grid_pos(dashboard_models.GridPos(x=0, y=y, w=24, h=1))
        )
        y += 1
        line_x = None
        for chart in section.charts:
            if line_x is not None and chart.x <= line_x:
                y += PANEL_HEIGHT
            board.with_panel(_chart(chart, y))
            line_x = chart.x
        y += PANEL_HEIGHT
    return board


def render() -> str:
    """The dashboard's JSON as committed: keys sorted, two-space indent, a final newline."""
    document = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    """Write ops/grafana/dashboards/herald.json (or, with --check, say if it is stale)."""
    text = render()
    if "--check" in sys.argv[1:]:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python ops/grafana/dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
