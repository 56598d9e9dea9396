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
    rate=st.integers(min_value=1, max_value=20),
    gaps=st.lists(
        st.floats(min_value=0, max_value=0.05) | st.floats(min_value=0, max_value=2),
        min_size=1,
        max_size=120,
    ),
)
def test_no_window_gets_more_than_burst_plus_rate_times_its_length(
    rate: int, gaps: list[float]
) -> None:
    """Whatever the arrival times, the attempts that go within any window of length L
    number at most burst + rate * L (the burst is one second's worth)."""
    now = [0.0]
    pacer = Pacer(clock=lambda: now[0])
    burst = max(1, rate)
    goes_at = []
    for gap in gaps:
        now[0] += gap
        goes_at.append(now[0] + pacer.delay_s("evtd_x", rate))
    goes_at.sort()
    for first, start in enumerate(goes_at):
        for last in range(first + burst, len(goes_at)):
            assert last - first + 1 <= burst + rate * (goes_at[last] - start) + 1e-6


def test_the_window_bound_binds() -> None:
    """The property above is tight: arrivals all at once go exactly at the bound."""
    pacer = Pacer(clock=lambda: 0.0)
    goes_at = [pacer.delay_s("evtd_x", 4) for _ in range(12)]
    assert goes_at == pytest.approx([0.0] * 4 + [0.25 * n for n in range(1, 9)])


def test_a_new_rate_replaces_the_bucket_and_none_removes_it() -> None:
    pacer = Pacer(clock=lambda: 0.0)
    assert [pacer.delay_s("evtd_x", 1) for _ in range(2)] == [0.0, 1.0]
    assert pacer.delay_s("evtd_x", 10) == 0.0  # a PATCHed rate starts a fresh bucket
    assert pacer.delay_s("evtd_x", None) == 0.0
    assert pacer.delay_s("evtd_y", 1) == 0.0  # buckets are per destination
