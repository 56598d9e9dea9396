"""Per-destination circuit breakers (pure, on a fake clock), where deferrals wait, and the
admission guards around them."""

from __future__ import annotations

from pipeline.admission import Admission
from pipeline.circuit import CircuitBreakers, Outcome
from pipeline.retry import Retry, Schedule, defer_step
from pipeline.settings import Settings

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


DESTINATION = {"id": "d", "tenant": "t", "generation": "g1", "type": "webhook"}


def _delivery(**extra: object) -> dict[str, object]:
    return {
        "tenant": "t",
        "destination_id": "d",
        "destination_generation": "g1",
        "attempt": 0,
        "event": {"type": "task_run.completed"},
        **extra,
    }


def test_admission_bounds_what_one_destination_has_outstanding() -> None:
    admission = Admission(Settings(sink_max_queued_per_destination=2), Schedule())
    assert [admission.enqueue(b"d") for _ in range(3)] == [True, True, False]
    assert admission.enqueue(b"other")
    admission.finished(b"d")
    assert admission.enqueue(b"d")
    unbounded = Admission(Settings(sink_max_queued_per_destination=0), Schedule())
    assert all(unbounded.enqueue(b"d") for _ in range(1000))


def test_admission_lets_a_test_event_or_manual_retry_pass_an_open_circuit() -> None:
    admission = Admission(Settings(circuit_failure_threshold=1), Schedule())
    admission.outcome(DESTINATION, FAILED)
    assert 29 < (admission.circuit_wait_s(_delivery()) or 0) <= 30
    test_event = _delivery(event={"type": "event_destination.test"})
    assert admission.circuit_wait_s(test_event) is None
    assert admission.circuit_wait_s(_delivery(manual_retry=True)) is None
    # Once it failed and waits in a retry tier, it is a delivery like any other.
    assert admission.circuit_wait_s(_delivery(manual_retry=True, attempt=1)) is not None


def test_a_circuit_is_one_tenants_destination_in_one_life() -> None:
    admission = Admission(Settings(circuit_failure_threshold=1), Schedule())
    admission.outcome(DESTINATION, FAILED)
    assert admission.circuit_wait_s(_delivery()) is not None
    # Deleted and created again under the same id: a new generation, a closed circuit.
    assert admission.circuit_wait_s(_delivery(destination_generation="g2")) is None
    # Another tenant's destination of the same id has a circuit of its own.
    assert admission.circuit_wait_s(_delivery(tenant="other")) is None


def test_hold_bound_defaults_to_the_retry_schedule_span() -> None:
    admission = Admission(Settings(), Schedule(base_delay_s=1, max_retries=3))  # 1+2+4 s
    assert not admission.held_too_long(_delivery(held_ms=6999))
    assert admission.held_too_long(_delivery(held_ms=7000))
    explicit = Admission(Settings(circuit_max_hold_s=1), Schedule(base_delay_s=1, max_retries=3))
    assert explicit.held_too_long(_delivery(held_ms=1000))
