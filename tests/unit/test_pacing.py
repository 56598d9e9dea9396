"""The token bucket behind per-destination `rate_limit` pacing (pure, on a fake clock)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.pacing import Pacer, TokenBucket


def test_a_full_bucket_lets_its_burst_through_then_spaces_the_rest() -> None:
    bucket = TokenBucket(rate_per_s=5, burst=5, now_s=0.0)
    delays = [bucket.reserve(0.0) for _ in range(8)]
    assert delays[:5] == [0.0] * 5
    assert delays[5:] == pytest.approx([0.2, 0.4, 0.6])


def test_tokens_refill_at_the_rate_up_to_the_burst() -> None:
    bucket = TokenBucket(rate_per_s=2, burst=2, now_s=0.0)
    assert [bucket.reserve(0.0), bucket.reserve(0.0)] == [0.0, 0.0]
    assert bucket.reserve(0.5) == 0.0  # one token came back in 0.5 s
    assert bucket.reserve(0.5) == 0.5
    bucket = TokenBucket(rate_per_s=2, burst=2, now_s=0.0)
    assert [bucket.reserve(100.0) for _ in range(3)] == [0.0, 0.0, 0.5]  # never above burst


@given(
    rate=st.integers(min_value=1, max_value=1000),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=200),
)
def test_no_window_gets_more_than_burst_plus_rate_times_its_length(
    rate: int, gaps: list[float]
) -> None:
    """Whatever the arrival times, attempt k goes no sooner than (k - burst) / rate after
    the first reservation."""
    now = [0.0]
    pacer = Pacer(clock=lambda: now[0])
    burst = max(1.0, float(rate))
    start = 0.0
    for k, gap in enumerate(gaps):
        now[0] += gap
        if k == 0:
            start = now[0]
        goes_at = now[0] + pacer.delay_s("evtd_x", rate)
        assert goes_at >= start + (k + 1 - burst) / rate - 1e-9


def test_a_new_rate_replaces_the_bucket_and_none_removes_it() -> None:
    pacer = Pacer(clock=lambda: 0.0)
    assert [pacer.delay_s("evtd_x", 1) for _ in range(2)] == [0.0, 1.0]
    assert pacer.delay_s("evtd_x", 10) == 0.0  # a PATCHed rate starts a fresh bucket
    assert pacer.delay_s("evtd_x", None) == 0.0
    assert pacer.delay_s("evtd_y", 1) == 0.0  # buckets are per destination
