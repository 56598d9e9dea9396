"""Retry scheduling (pure) and the offset tracker that keeps commits below unfinished work."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.offsets import PartitionTracker
from pipeline.retry import DeadLetter, Retry, Schedule, next_step


def test_default_schedule_matches_the_contract() -> None:
    schedule = Schedule()
    delays = [schedule.delay_s(n) for n in range(1, 11)]
    assert delays[0] == 30
    assert delays[-1] == 4 * 3600 + 16 * 60
    assert 8 * 3600 + 30 * 60 < sum(delays) < 8 * 3600 + 32 * 60


def test_each_failure_moves_one_tier_until_the_dlq() -> None:
    schedule = Schedule(base_delay_s=1, max_retries=3)
    steps = [next_step(schedule, attempt, permanent=False, now_ms=0) for attempt in range(4)]
    assert steps[:3] == [
        Retry("deliveries.retry.1", 1, 1000, attempt=1),
        Retry("deliveries.retry.2", 2, 2000, attempt=2),
        Retry("deliveries.retry.3", 3, 4000, attempt=3),
    ]
    assert isinstance(steps[3], DeadLetter)


def test_permanent_failure_goes_straight_to_the_dlq() -> None:
    assert isinstance(next_step(Schedule(), 0, permanent=True, now_ms=0), DeadLetter)


@given(st.integers(0, 9), st.floats(0, 10**6, allow_nan=False))
def test_retry_after_is_never_sooner_than_the_tier_and_keeps_order(
    attempt: int, retry_after_s: float
) -> None:
    schedule = Schedule(base_delay_s=30, max_retries=10)
    step = next_step(schedule, attempt, permanent=False, now_ms=0, retry_after_s=retry_after_s)
    assert isinstance(step, Retry)
    assert step.tier >= attempt + 1
    assert step.attempt == attempt + 1  # a long hint moves the due time, not the count
    # The due time is exactly the tier's own delay, so due times rise within each tier topic.
    assert step.due_ms == int(schedule.delay_s(step.tier) * 1000)
    if step.tier < schedule.max_retries:
        assert step.due_ms >= min(retry_after_s, 6 * 3600) * 1000 - 1


def test_tracker_commits_below_the_lowest_unfinished() -> None:
    tracker = PartitionTracker()
    assert tracker.committable() is None
    for offset in (10, 11, 12):
        tracker.add(offset)
    tracker.done(12)
    tracker.done(11)
    assert tracker.committable() == 10
    tracker.done(10)
    assert tracker.committable() == 13
    assert tracker.in_flight == 0


@given(st.permutations(list(range(20))), st.integers(0, 20))
def test_tracker_never_commits_past_unfinished(order: list[int], finished: int) -> None:
    tracker = PartitionTracker()
    for offset in range(20):
        tracker.add(offset)
    done = set(order[:finished])
    for offset in order[:finished]:
        tracker.done(offset)
    committable = tracker.committable()
    assert committable is not None
    assert all(o in done for o in range(committable))
    assert committable == 20 or committable not in done
