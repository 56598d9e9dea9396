"""Per-destination circuit breakers (pure, on a fake clock), and where deferrals wait."""

from __future__ import annotations

from pipeline.circuit import CircuitBreakers, Outcome
from pipeline.retry import Retry, Schedule, defer_step

FAILED = Outcome.RETRYABLE


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def breakers(clock: Clock, threshold: int = 3) -> CircuitBreakers:
    return CircuitBreakers(threshold, cooldown_s=10, max_cooldown_s=25, clock=clock)


def test_opens_after_threshold_failures_in_a_row_and_a_success_resets_the_count() -> None:
    clock = Clock()
    circuits = breakers(clock)
    assert [circuits.record("d", FAILED) for _ in range(2)] == [None, None]
    assert circuits.record("d", Outcome.SUCCESS) is None
    assert [circuits.record("d", FAILED) for _ in range(2)] == [None, None]
    assert circuits.admit("d") is None
    assert circuits.record("d", FAILED) == "open"
    assert circuits.admit("d") == 10
    clock.now_s += 4
    assert circuits.admit("d") == 6  # the rest of the cool-down
    assert circuits.admit("other") is None  # per destination
    assert circuits.open_count() == 1


def test_one_probe_after_the_cool_down_closes_or_reopens_for_longer() -> None:
    clock = Clock()
    circuits = breakers(clock)
    for _ in range(3):
        circuits.record("d", FAILED)
    clock.now_s += 10
    assert circuits.admit("d") is None  # the probe
    assert circuits.admit("d") == 10  # only one at a time
    assert circuits.record("d", FAILED) == "open"
    clock.now_s += 10
    assert circuits.admit("d") == 10  # the cool-down doubled to 20 s
    clock.now_s += 10
    assert circuits.admit("d") is None
    assert circuits.record("d", FAILED) == "open"
    clock.now_s += 24
    assert circuits.admit("d") == 1  # doubled again, capped at 25 s
    clock.now_s += 1
    assert circuits.admit("d") is None
    assert circuits.record("d", Outcome.SUCCESS) == "closed"
    assert circuits.admit("d") is None
    assert circuits.open_count() == 0


def test_a_permanent_failure_neither_counts_nor_keeps_the_probe_slot() -> None:
    clock = Clock()
    circuits = breakers(clock)
    for _ in range(5):
        assert circuits.record("d", Outcome.PERMANENT) is None
    assert circuits.admit("d") is None
    for _ in range(3):
        circuits.record("d", FAILED)
    clock.now_s += 10
    assert circuits.admit("d") is None
    circuits.record("d", Outcome.PERMANENT)
    assert circuits.admit("d") is None  # the next delivery probes


def test_a_probe_that_never_reports_back_frees_the_way_after_a_cool_down() -> None:
    clock = Clock()
    circuits = breakers(clock)
    for _ in range(3):
        circuits.record("d", FAILED)
    clock.now_s += 10
    assert circuits.admit("d") is None
    clock.now_s += 9
    assert circuits.admit("d") == 10
    clock.now_s += 1
    assert circuits.admit("d") is None


def test_threshold_zero_turns_the_breaker_off() -> None:
    circuits = breakers(Clock(), threshold=0)
    for _ in range(100):
        circuits.record("d", FAILED)
    assert circuits.admit("d") is None


def test_a_deferral_waits_in_the_first_tier_that_covers_the_wait() -> None:
    schedule = Schedule(base_delay_s=30, max_retries=10)
    assert defer_step(schedule, 0, now_ms=0) == Retry("deliveries.retry.1", 1, 30_000)
    assert defer_step(schedule, 30, now_ms=0) == Retry("deliveries.retry.1", 1, 30_000)
    assert defer_step(schedule, 31, now_ms=5) == Retry("deliveries.retry.2", 2, 60_005)
    assert defer_step(schedule, 10**9, now_ms=0).tier == 10


def test_peek_tells_the_wait_without_starting_the_probe() -> None:
    clock = Clock()
    circuits = breakers(clock, threshold=1)
    assert circuits.peek("d") is None
    circuits.record("d", FAILED)
    assert circuits.is_open("d")
    assert circuits.peek("d") == 10
    clock.now_s += 10
    assert circuits.peek("d") is None  # a delivery arriving now would be let through ...
    assert circuits.peek("d") is None  # ... and peeking twice starts no probe
    assert circuits.admit("d") is None  # the probe
    assert circuits.peek("d") == 10  # while the probe is out, others wait
