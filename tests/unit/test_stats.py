"""Delivery statistics without a server: the latency histogram's slots and percentiles (and
the precision pipeline/stats.py states), the rollup rows of a batch, and the request's
range, buckets and 400s (api/stats.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st

from api.errors import RequestValidationError
from api.stats import MAX_BUCKETS, StatsRequest
from pipeline import stats

NOW = datetime(2026, 12, 2, 13, 7, 31, tzinfo=UTC)


def test_slots_cover_each_latency_once_in_order() -> None:
    assert stats.latency_slot(0.0) == 0
    assert stats.latency_slot(0.999) == 0
    assert stats.latency_slot(1.0) == 1
    assert stats.latency_slot(2.0) == 1 + stats.SLOTS_PER_DOUBLING
    assert stats.latency_slot(10**9) == stats.LATENCY_SLOTS - 1
    for latency_ms in (0.5, 1.0, 3.7, 250.0, 9_999.0):
        low, high = stats.slot_bounds_ms(stats.latency_slot(latency_ms))
        assert low <= latency_ms < high


def _nearest_rank(values: list[float], quantile: float) -> float:
    return sorted(values)[max(0, math.ceil(quantile * len(values)) - 1)]


@given(
    st.lists(st.floats(min_value=0.0, max_value=100_000.0), min_size=1, max_size=300),
    st.sampled_from([0.5, 0.95]),
)
def test_a_percentile_is_within_the_stated_precision(values: list[float], quantile: float) -> None:
    histogram = [0] * stats.LATENCY_SLOTS
    for value in values:
        histogram[stats.latency_slot(value)] += 1
    [estimate] = stats.percentiles_ms(histogram, (quantile,))
    true = _nearest_rank(values, quantile)
    assert estimate is not None
    # The stated precision: within 26 % of the true value, or 1 ms below 1 ms.
    assert abs(estimate - true) <= max(0.26 * true, 1.0) + 0.001


def test_an_empty_histogram_has_no_percentile() -> None:
    assert stats.percentiles_ms([0] * stats.LATENCY_SLOTS, (0.5, 0.95)) == [None, None]


def test_percentiles_of_one_pass_are_those_of_one_each() -> None:
    histogram = [0] * stats.LATENCY_SLOTS
    for slot, count in ((3, 5), (10, 1), (20, 90), (40, 4)):
        histogram[slot] = count
    both = stats.percentiles_ms(histogram, (0.5, 0.95))
    assert both == [stats.percentiles_ms(histogram, (q,))[0] for q in (0.5, 0.95)]
    low, high = stats.slot_bounds_ms(20)
    assert both[0] is not None and low <= both[0] <= high


def test_status_classes() -> None:
    assert [stats.status_class(s) for s in (200, 302, 404, 503, None, 99, 600)] == [
        "status_2xx", "status_3xx", "status_4xx", "status_5xx",
        "status_none", "status_none", "status_none",
    ]  # fmt: skip


def test_a_rollup_counts_per_minute_and_sums_per_hour() -> None:
    rollup = stats.Rollup()
    group = ("t", "evtd_1", "chg_1", "a.b")
    at = [datetime(2026, 1, 1, 10, minute, 5, tzinfo=UTC) for minute in (1, 1, 2)]
    rollup.event("t", "a.b", at[0])
    rollup.delivery("t", "evtd_1", "chg_1", "a.b", at[0])
    rollup.attempt(group, "failed", 503, 12.0, None, at[0])
    rollup.attempt(group, "failed", None, 30_000.0, "exhausted", at[1])
    rollup.attempt(group, "success", 200, 12.0, None, at[2])
    rollup.attempt(group, "canceled", None, 0.0, None, at[2])
    rows = {
        (r[1], r[2], r[3]): dict(zip(stats.COUNTERS, r[6:-1], strict=True)) for r in rollup.rows()
    }
    hour = rows[(stats.HOUR_S, datetime(2026, 1, 1, 10, tzinfo=UTC), "evtd_1")]
    assert hour == {
        "events": 0, "deliveries": 1, "succeeded": 1, "failed": 1, "canceled": 1,
        "attempts_succeeded": 1, "attempts_failed": 2, "status_2xx": 1, "status_3xx": 0,
        "status_4xx": 0, "status_5xx": 1, "status_none": 1,
    }  # fmt: skip
    assert rows[(stats.HOUR_S, datetime(2026, 1, 1, 10, tzinfo=UTC), "")]["events"] == 1
    first = rows[(stats.MINUTE_S, datetime(2026, 1, 1, 10, 1, tzinfo=UTC), "evtd_1")]
    assert (first["attempts_failed"], first["attempts_succeeded"]) == (2, 0)
    histograms = {(r[1], r[2], r[3]): r[-1] for r in rollup.rows()}
    hour_histogram = histograms[(stats.HOUR_S, datetime(2026, 1, 1, 10, tzinfo=UTC), "evtd_1")]
    assert hour_histogram[stats.latency_slot(12.0)] == 2  # the canceled one is no attempt
    assert sum(hour_histogram) == 3


def test_a_rollup_sums_every_destination_of_a_tenant_and_type() -> None:
    rollup = stats.Rollup()
    at = datetime(2026, 1, 1, 10, 1, 5, tzinfo=UTC)
    rollup.event("t", "a.b", at)
    for destination, latency_ms in (("evtd_1", 12.0), ("evtd_2", 300.0)):
        rollup.delivery("t", destination, "chg_1", "a.b", at)
        rollup.attempt(("t", destination, "chg_1", "a.b"), "success", 200, latency_ms, None, at)
    rollup.attempt(("t", "evtd_1", "chg_1", "c.d"), "failed", 500, 5.0, None, at)
    rollup.event("u", "a.b", at)  # another tenant's
    rows = {(r[0], r[1], r[3], r[5]): r for r in rollup.rows()}
    for span_s in (stats.MINUTE_S, stats.HOUR_S):
        every = rows[("t", span_s, stats.ALL_DESTINATIONS, "a.b")]
        assert every[4] == "" and every[2].minute == (1 if span_s == stats.MINUTE_S else 0)
        counters = dict(zip(stats.COUNTERS, every[6:-1], strict=True))
        assert (counters["events"], counters["deliveries"], counters["succeeded"]) == (1, 2, 2)
        assert counters["attempts_succeeded"] == counters["status_2xx"] == 2
        assert every[-1][stats.latency_slot(12.0)] == every[-1][stats.latency_slot(300.0)] == 1
        other_type = rows[("t", span_s, stats.ALL_DESTINATIONS, "c.d")]
        assert dict(zip(stats.COUNTERS, other_type[6:-1], strict=True))["status_5xx"] == 1
        assert rows[("u", span_s, stats.ALL_DESTINATIONS, "a.b")][6] == 1
    # The per-destination rows are unchanged by it: each counts its own attempt once.
    assert rows[("t", stats.MINUTE_S, "evtd_2", "a.b")][-1][stats.latency_slot(12.0)] == 0


def _parse(**query: str) -> StatsRequest:
    path = "/v2/stats?" + "&".join(f"{k}={v}" for k, v in query.items())
    return StatsRequest.parse(make_mocked_request("GET", path), NOW)


def test_defaults_and_alignment() -> None:
    request = _parse()
    assert (request.bucket, request.group_by) == ("hour", None)
    assert request.end == datetime(2026, 12, 2, 14, tzinfo=UTC)
    assert request.start == datetime(2026, 12, 1, 14, tzinfo=UTC)
    day = _parse(bucket="day", **{"from": "2026-11-01T05:00:00Z", "to": "2026-11-03T00:00:00Z"})
    assert (day.start, day.end) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 11, 3, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"bucket": "week"}, "bucket"),
        ({"group_by": "tenant"}, "group_by"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01"}, "to"),
        ({"from": "2026-12-02T12:00:00Z", "to": "2026-12-02T11:00:00Z"}, "to"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "bucket": "day"}, "from"),
        ({"from": "2026-11-01T00:00:00Z", "bucket": "minute"}, "bucket"),
        ({"to": "0001-01-01T00:00:00Z"}, "to"),
        ({"to": "9999-12-31T23:59:59Z"}, "to"),
    ],
)
def test_bad_parameters_are_400s_naming_the_field(query: dict[str, str], field: str) -> None:
    with pytest.raises(RequestValidationError) as caught:
        _parse(**query)
    assert list(caught.value.errors) == [field]


def test_the_bucket_cap() -> None:
    request = _parse(
        bucket="minute", **{"from": "2026-12-02T00:00:00Z", "to": "2026-12-02T16:40:00Z"}
    )
    assert (request.end - request.start).total_seconds() == MAX_BUCKETS * 60
