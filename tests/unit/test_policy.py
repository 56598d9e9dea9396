"""The delivery policy as tables of cases: what happens to a delivery whose turn has come,
and what follows each kind of answer from the sink (pipeline/policy.py; pure)."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.circuit import Outcome
from pipeline.operator_events import OPERATOR_TENANT
from pipeline.policy import (
    SKIPPED_REASON,
    Attempt,
    Cancel,
    Defer,
    Delivered,
    Failed,
    LaneState,
    Rules,
    Skip,
    after_attempt,
    before_attempt,
    health_of,
)
from pipeline.retry import DeadLetter, Retry, Schedule
from pipeline.sinks.base import (
    CredentialsRefused,
    DeliveryError,
    EventRejected,
    PermanentError,
    RetryableError,
)
from pipeline.topics import retry_topic

NOW_MS = 1_000_000
RULES = Rules(Schedule(base_delay_s=30, max_retries=10), max_queue_wait_s=30, disable_after=5)


def _delivery(attempt: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "id": "evdl_1",
        "tenant": "t",
        "destination_id": "evtd_1",
        "destination_generation": "g1",
        "attempt": attempt,
        "event": {"id": "evt_1", "type": "task_run.completed"},
        **extra,
    }


def _destination(**fields: Any) -> dict[str, Any]:
    return {
        "id": "evtd_1",
        "tenant": "t",
        "generation": "g1",
        "type": "webhook",
        "status": "active",
        "verified_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        **fields,
    }


TEST_EVENT = {"id": "evt_t", "type": "event_destination.test"}
BEFORE_CASES = [
    # (what, delivery, destination, lane, expected)
    ("healthy", _delivery(), _destination(), LaneState(), Attempt()),
    ("deleted", _delivery(), None, LaneState(), Cancel("deleted")),
    ("created again", _delivery(), _destination(generation="g2"), LaneState(), Cancel("deleted")),
    ("disabled", _delivery(), _destination(status="inactive"), LaneState(), Cancel("inactive")),
    (
        "disabled and circuit open: canceled first",
        _delivery(),
        _destination(status="inactive"),
        LaneState(circuit_wait_s=5),
        Cancel("inactive"),
    ),
    (
        "circuit open: on to the next scheduled retry, using it",
        _delivery(attempt=2),
        _destination(),
        LaneState(circuit_wait_s=5),
        Skip(Retry(retry_topic(3), 3, NOW_MS + 120_000, 3)),
    ),
    (
        "circuit open for longer than the next tier: a later tier, one retry used",
        _delivery(),
        _destination(),
        LaneState(circuit_wait_s=100),
        Skip(Retry(retry_topic(3), 3, NOW_MS + 120_000, 1)),
    ),
    (
        "circuit open, retries used up: dead-lettered without an attempt",
        _delivery(attempt=10),
        _destination(),
        LaneState(circuit_wait_s=5),
        Skip(DeadLetter(f"{SKIPPED_REASON}; retries exhausted")),
    ),
    (
        "circuit open, the fifth dead letter in a row: disabled too",
        _delivery(attempt=10),
        _destination(),
        LaneState(circuit_wait_s=5, dead_letters_in_row=4),
        Skip(
            DeadLetter(f"{SKIPPED_REASON}; retries exhausted"),
            disable="the last 5 deliveries exhausted their retries",
        ),
    ),
    (
        "a test event passes an open circuit",
        _delivery(event=TEST_EVENT),
        _destination(),
        LaneState(circuit_wait_s=5),
        Attempt(),
    ),
    (
        "a manual retry passes an open circuit",
        _delivery(manual_retry=True),
        _destination(),
        LaneState(circuit_wait_s=5),
        Attempt(),
    ),
    (
        "a manual retry's own retries do not",
        _delivery(attempt=1, manual_retry=True),
        _destination(),
        LaneState(circuit_wait_s=5),
        Skip(Retry(retry_topic(2), 2, NOW_MS + 60_000, 2)),
    ),
    (
        "a long queue within the bound waits",
        _delivery(),
        _destination(),
        LaneState(queue_wait_s=29),
        Attempt(),
    ),
    (
        "a lane too far behind: put off, no retry used",
        _delivery(attempt=3),
        _destination(),
        LaneState(queue_wait_s=45),
        Defer(Retry(retry_topic(2), 2, NOW_MS + 60_000)),
    ),
]


@pytest.mark.parametrize(
    ("delivery", "destination", "lane", "expected"),
    [case[1:] for case in BEFORE_CASES],
    ids=[case[0] for case in BEFORE_CASES],
)
def test_before_an_attempt(
    delivery: dict[str, Any], destination: dict[str, Any] | None, lane: LaneState, expected: object
) -> None:
    assert before_attempt(delivery, destination, lane, RULES, now_ms=NOW_MS) == expected


def test_a_queue_bound_of_zero_never_puts_off() -> None:
    rules = Rules(RULES.schedule, max_queue_wait_s=0)
    lane = LaneState(queue_wait_s=10**6)
    assert before_attempt(_delivery(), _destination(), lane, rules, now_ms=0) == Attempt()


GONE = PermanentError("410 Gone", response_status=410)
AFTER_CASES: list[
    tuple[str, dict[str, Any], dict[str, Any], DeliveryError | None, LaneState, object]
] = [
    ("success", _delivery(), _destination(), None, LaneState(), Delivered(verify=False)),
    (
        "first success verifies",
        _delivery(),
        _destination(verified_at=None),
        None,
        LaneState(),
        Delivered(verify=True),
    ),
    (
        "503: the next tier",
        _delivery(),
        _destination(),
        RetryableError("HTTP 503", response_status=503),
        LaneState(),
        Failed(Retry(retry_topic(1), 1, NOW_MS + 30_000, 1)),
    ),
    (
        "503 with Retry-After 100 s: a later tier, one retry",
        _delivery(),
        _destination(),
        RetryableError("HTTP 503", response_status=503, retry_after_s=100),
        LaneState(),
        Failed(Retry(retry_topic(3), 3, NOW_MS + 120_000, 1)),
    ),
    (
        "503 on the last attempt: dead-lettered",
        _delivery(attempt=10),
        _destination(),
        RetryableError("HTTP 503", response_status=503),
        LaneState(),
        Failed(DeadLetter("retries exhausted after 11 attempts")),
    ),
    (
        "503 on the last attempt, fifth dead letter in a row: disabled",
        _delivery(attempt=10),
        _destination(),
        RetryableError("HTTP 503", response_status=503),
        LaneState(dead_letters_in_row=4),
        Failed(
            DeadLetter("retries exhausted after 11 attempts"),
            disable="the last 5 deliveries exhausted their retries",
        ),
    ),
    (
        "410: dead-lettered and disabled at once",
        _delivery(),
        _destination(),
        GONE,
        LaneState(),
        Failed(DeadLetter("permanent failure"), disable="the receiver answered 410 Gone"),
    ),
    (
        "the operator sink's fifth dead letter in a row: never disabled",
        _delivery(attempt=10, tenant=OPERATOR_TENANT),
        _destination(tenant=OPERATOR_TENANT),
        RetryableError("HTTP 503", response_status=503),
        LaneState(dead_letters_in_row=4),
        Failed(DeadLetter("retries exhausted after 11 attempts")),
    ),
    (
        "the operator sink answering 410: dead-lettered, never disabled",
        _delivery(tenant=OPERATOR_TENANT),
        _destination(tenant=OPERATOR_TENANT),
        GONE,
        LaneState(),
        Failed(DeadLetter("permanent failure")),
    ),
    (
        "an event the destination cannot take never counts toward disable",
        _delivery(),
        _destination(),
        EventRejected("too large"),
        LaneState(dead_letters_in_row=4),
        Failed(DeadLetter("the destination cannot take this event", counts_toward_disable=False)),
    ),
    (
        "refused credentials of a verified destination: dead-lettered",
        _delivery(),
        _destination(),
        CredentialsRefused("AccessDenied"),
        LaneState(),
        Failed(DeadLetter("permanent failure")),
    ),
    (
        "refused brand-new credentials: retried",
        _delivery(),
        _destination(verified_at=None, updated_at="1970-01-01T00:16:30Z"),  # 10 s before NOW
        CredentialsRefused("AccessDenied"),
        LaneState(),
        Failed(Retry(retry_topic(1), 1, NOW_MS + 30_000, 1)),
    ),
]


@pytest.mark.parametrize(
    ("delivery", "destination", "error", "lane", "expected"),
    [case[1:] for case in AFTER_CASES],
    ids=[case[0] for case in AFTER_CASES],
)
def test_after_an_attempt(
    delivery: dict[str, Any],
    destination: dict[str, Any],
    error: DeliveryError | None,
    lane: LaneState,
    expected: object,
) -> None:
    assert after_attempt(delivery, destination, error, lane, RULES, now_ms=NOW_MS) == expected


HEALTH_CASES = [
    (None, Outcome.SUCCESS, False),
    (RetryableError("HTTP 500", response_status=500), Outcome.RETRYABLE, False),
    (RetryableError("HTTP 503", response_status=503), Outcome.RETRYABLE, True),
    (RetryableError("HTTP 429", response_status=429), Outcome.RETRYABLE, True),
    (RetryableError("timed out waiting for the receiver"), Outcome.RETRYABLE, True),
    (RetryableError("connection failed: connection refused"), Outcome.RETRYABLE, False),
    (GONE, Outcome.PERMANENT, False),
]


@pytest.mark.parametrize(("error", "outcome", "overloaded"), HEALTH_CASES)
def test_what_an_attempt_tells_the_lane(
    error: DeliveryError | None, outcome: Outcome, overloaded: bool
) -> None:
    assert health_of(error) == (outcome, overloaded)
