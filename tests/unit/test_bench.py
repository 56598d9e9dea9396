"""The benchmark suite's pure parts: percentiles, retry lateness, profile summaries, the table.

No speed is asserted anywhere: these check that the bench computes its figures right.
"""

from __future__ import annotations

import os

from bench.context import Row, metric_delta, metric_samples
from bench.profile import component, summarize
from bench.receiver import Tally, percentile_summary
from bench.report import table
from bench.scenarios.dead import (
    chain_topics,
    deltas,
    extra_cpu_share,
    records_per_failed_delivery,
    refused_port,
)
from bench.scenarios.failure import lateness
from bench.scenarios.hot import case_note, routing_figures, runner_was_behind, slot_hold_ms
from bench.stack import runqueue_wait_seconds
from pipeline.retry import Schedule


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    summary = percentile_summary(values)
    assert summary == {"n": 100, "p50": 51.0, "p95": 96.0, "p99": 100.0, "max": 100.0}
    assert percentile_summary([])["p50"] is None


def test_tally_counts_redeliveries_once_and_keeps_arrivals_of_failing_groups() -> None:
    tally = Tally(arrivals={})
    tally.add("evdl_1", 10.0, sent_at=9.5)
    tally.add("evdl_1", 11.0, sent_at=9.5)
    tally.add("evdl_2", 12.0, sent_at=None)
    summary = tally.summary(percentiles=True, arrivals=True)
    assert (summary["count"], summary["unique"]) == (3, 2)
    assert summary["latency_ms"]["n"] == 2
    assert summary["arrivals"] == {"evdl_1": [10.0, 11.0], "evdl_2": [12.0]}


def test_lateness_is_the_gap_past_each_tiers_delay() -> None:
    schedule = Schedule(base_delay_s=0.5, max_retries=3)
    # One delivery: first attempt at 0, retries 0.51 s, 1.02 s and 2.0 s after the previous.
    arrivals = {"evdl_1": [100.0, 100.51, 101.53, 103.53]}
    late = lateness(arrivals, schedule)
    assert late["tier_1"]["p50"] == 10.0
    assert late["tier_2"]["p50"] == 20.0
    assert late["tier_3"]["p50"] == 0.0
    assert late["all"]["n"] == 3


def test_lateness_ignores_attempts_beyond_the_schedule_and_unordered_input() -> None:
    schedule = Schedule(base_delay_s=1.0, max_retries=1)
    late = lateness({"evdl_1": [3.0, 1.0, 2.0]}, schedule)  # arrival order is not trusted
    assert late["tier_1"]["n"] == 1
    assert late["tier_1"]["p50"] == 0.0


def test_profile_summary_by_component_and_function() -> None:
    collapsed = "\n".join(
        [
            "main (/x/api/cli.py:1);deliver (/x/pipeline/delivery.py:9) 3",
            "main (/x/api/cli.py:1);send (/v/site-packages/aiokafka/conn.py:5) 1",
            "not a sample line",
        ]
    )
    summary = summarize(collapsed)
    assert summary["samples"] == 4
    by_component = {c["name"]: c["share"] for c in summary["by_component_self"]}
    assert by_component == {"herald: pipeline": 0.75, "aiokafka": 0.25}
    inclusive = {f["name"]: f["samples"] for f in summary["top_inclusive"]}
    assert inclusive["main (api/cli.py)"] == 4
    assert component("/usr/lib/python3.11/asyncio/events.py") == "asyncio"
    assert component("") == "native"


def test_table_shows_ratios_to_the_ceiling() -> None:
    rows = [
        Row("fanout", "1 subscriber", 500.0, "deliveries/s", 2000.0, "a note"),
        Row("fanout", "ceiling", 2000.0, "req/s"),
        Row("latency", "p50", None, "ms"),
    ]
    assert rows[0].ratio == 0.25
    assert rows[1].ratio is None
    lines = table(rows).splitlines()
    assert len(lines) == 5
    assert "25%" in lines[2] and "2,000" in lines[2]
    assert "—" in lines[4]


def test_chain_topics_are_the_retry_tiers_then_the_dlq() -> None:
    assert chain_topics(3) == [
        "deliveries.retry.1",
        "deliveries.retry.2",
        "deliveries.retry.3",
        "deliveries.dlq",
    ]


def test_deltas_between_end_offset_snapshots() -> None:
    assert deltas({"a": 5, "b": 0}, {"a": 8, "b": 2, "c": 1}) == {"a": 3, "b": 2, "c": 1}


def test_records_per_failed_delivery_subtracts_the_healthy_destinations_share() -> None:
    chain = chain_topics(3)
    # Clean: 100 events, one healthy delivery and one attempt record each.
    clean = {"deliveries": 100, "delivery-attempts": 100}
    # Dead: 200 events to 1 healthy + 5 dead; each dead delivery fails 4 times (4 attempt
    # records) and moves through 3 tiers and the DLQ (4 chain records).
    dead = {
        "deliveries": 200 * 6,
        "delivery-attempts": 200 + 1000 * 4,
        "deliveries.retry.1": 1000,
        "deliveries.retry.2": 1000,
        "deliveries.retry.3": 1000,
        "deliveries.dlq": 1000,
    }
    got = records_per_failed_delivery(clean, 100, dead, 200, chain)
    assert got["routed_to_dead"] == 1000
    assert got["chain_records"] == 4000
    assert got["dlq_records"] == 1000
    assert got["chain_records_per_failed_delivery"] == 4.0
    assert got["attempt_records_per_failed_delivery"] == 4.0
    nothing = records_per_failed_delivery(clean, 100, {"deliveries": 100}, 100, chain)
    assert nothing["chain_records_per_failed_delivery"] is None


def test_extra_cpu_share_of_the_dead_run() -> None:
    assert extra_cpu_share(10.0, 4.0) == 0.6
    assert extra_cpu_share(0.0, 4.0) is None


def test_refused_port_is_below_32768_and_refuses() -> None:
    port = refused_port(20_000)
    assert 20_000 <= port < 32_768


def test_case_note_names_cpu_duplicates_and_shortfall() -> None:
    result = {
        "worker_cpu_ms_per_delivery": 1.234,
        "worker_cpu_per_wall_s": 0.4,
        "duplicates": 0,
        "complete": False,
        "delivered": 9,
        "expected_deliveries": 10,
    }
    note = case_note(result)
    assert "1.23 ms CPU/delivery" in note
    assert "0 duplicates" in note
    assert "only 9/10" in note


def test_metric_samples_and_deltas_by_label() -> None:
    before = metric_samples(
        "# HELP x\n"
        'herald_d_count{outcome="success",type="webhook"} 10.0\n'
        'herald_d_count{outcome="failed",type="webhook"} 1.0\n'
    )
    after = metric_samples(
        'herald_d_count{outcome="success",type="webhook"} 25.0\n'
        'herald_d_count{outcome="failed",type="webhook"} 4.0\n'
        "herald_other 3.0\n"
    )
    assert metric_delta(before, after, "herald_d_count", outcome="success") == 15.0
    assert metric_delta(before, after, "herald_d_count", type="webhook") == 18.0
    assert metric_delta(before, after, "herald_other") == 3.0
    assert metric_delta(before, after, "herald_missing") == 0.0


def test_slot_hold_by_littles_law() -> None:
    assert slot_hold_ms(400.0, 16) == 40.0
    assert slot_hold_ms(None, 16) is None


def test_routing_figures_from_the_first_publish() -> None:
    result = {"load_started_at": 100.0, "expected_deliveries": 1000}
    assert routing_figures(result, 102.0) == {"routed_after_s": 2.0, "routed_per_s": 500.0}
    assert routing_figures(result, None)["routed_per_s"] is None


def test_runner_was_behind_only_if_routing_ended_well_before_the_last_delivery() -> None:
    assert runner_was_behind({"routed_after_s": 5.0, "elapsed_s": 10.0})
    assert not runner_was_behind({"routed_after_s": 9.5, "elapsed_s": 10.0})
    assert not runner_was_behind({"routed_after_s": None, "elapsed_s": 10.0})


def test_runqueue_wait_reads_schedstat_and_is_zero_for_a_gone_process() -> None:
    assert runqueue_wait_seconds(os.getpid()) >= 0.0
    assert runqueue_wait_seconds(2**22 + 1) == 0.0  # above the default pid_max: never a pid
