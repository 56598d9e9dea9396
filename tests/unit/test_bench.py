"""The benchmark suite's pure parts: percentiles, retry lateness, profile summaries, the table.

No speed is asserted anywhere: these check that the bench computes its figures right.
"""

from __future__ import annotations

from bench.context import Row
from bench.profile import component, summarize
from bench.receiver import Tally, percentile_summary
from bench.report import table
from bench.scenarios.failure import lateness
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
