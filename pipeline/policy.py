"""What becomes of a delivery: the delivery runner's one place of decision. Pure.

Two questions, asked by the runner (pipeline/delivery.py) and answered here from the
delivery, its destination's current record and its lane's state (pipeline/lanes.py):

- `before_attempt`: its turn has come. Attempt it now; cancel it (the destination was
  deleted or disabled); skip it along its retry schedule without an attempt (the
  destination's circuit is open: a dead destination costs one record per scheduled retry,
  never one per cool-down); or put it off without using a retry (the destination's own
  queue would hold it longer than `max_queue_wait_s`: it is slow or rate-limited far
  behind; a burst to a healthy destination drains well within the bound and is never put
  off).
- `after_attempt`: the sink answered. Succeeded (the first success verifies the
  destination), or failed: retry at a time, or dead-letter; a 410 Gone, or the last
  `disable_after` deliveries dead-lettered in a row, also disable the destination.

`health_of` says what an attempt tells the destination's circuit and its adaptive
concurrency (pipeline/lanes.py): a success, a failure that may pass (timeouts, refused
connections, 5xx), a permanent one; and whether the receiver said it is overloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.circuit import Outcome
from pipeline.operator_events import operator_destination
from pipeline.retry import DeadLetter, Retry, Schedule, after_failure, defer_step, next_step
from pipeline.sinks.base import DeliveryError, PermanentError, RetryableError

# The type of the event POST /v2/event-destinations/{id}/test publishes (api/destinations.py).
TEST_EVENT_TYPE = "event_destination.test"
# Statuses by which a receiver says it has too much to do: its lane halves its concurrency.
OVERLOAD_STATUSES = frozenset({429, 503})
SKIPPED_REASON = "not attempted: the destination's circuit is open"


@dataclass(frozen=True)
class Rules:
    """The operator's settings the policy follows."""

    schedule: Schedule
    # A delivery that would wait longer than this in its destination's lane is put off.
    # 0: never (it waits however long its lane takes).
    max_queue_wait_s: float = 30.0
    # The destination is disabled when this many of its deliveries in a row were
    # dead-lettered. 0: never.
    disable_after: int = 5


@dataclass(frozen=True)
class LaneState:
    """What the policy needs to know of the destination's recent past in this worker."""

    # None: its circuit lets this delivery through (closed, or this one is the probe);
    # otherwise the seconds until the circuit lets a probe through.
    circuit_wait_s: float | None = None
    # How long this delivery would wait in the lane for its turn, estimated from the lane's
    # measured service time, its concurrency and its rate limit.
    queue_wait_s: float = 0.0
    # The destination's deliveries dead-lettered in a row, before this one.
    dead_letters_in_row: int = 0


@dataclass(frozen=True)
class Attempt:
    """Send it to the destination now."""


@dataclass(frozen=True)
class Cancel:
    """Never attempt it: its destination is `deleted` (or another generation) or `inactive`."""

    reason: str


@dataclass(frozen=True)
class Skip:
    """Not attempted (the circuit is open): on to `step` as if an attempt had failed;
    `disable` (a reason) if that dead-letters one too many in a row."""

    step: Retry | DeadLetter
    disable: str | None = None
    reason: str = SKIPPED_REASON


@dataclass(frozen=True)
class Defer:
    """Not attempted and no retry used: its lane is too far behind; try at `step`."""

    step: Retry
    reason: str = "queue_full"


@dataclass(frozen=True)
class Delivered:
    """The attempt succeeded; `verify`: it is the destination's first success."""

    verify: bool


@dataclass(frozen=True)
class Failed:
    """The attempt failed: `step` comes next; `disable` (a reason) turns the destination
    inactive as well."""

    step: Retry | DeadLetter
    disable: str | None = None


Before = Attempt | Cancel | Skip | Defer
After = Delivered | Failed


def asked_for_now(delivery: dict[str, Any]) -> bool:
    """A manual retry or a test event, on its first go: the user asked for an attempt now
    (typically to check a fix), so it passes an open circuit, and its outcome counts."""
    manual = delivery.get("manual_retry") or delivery["event"]["type"] == TEST_EVENT_TYPE
    return bool(manual) and delivery["attempt"] == 0


# The head flag of a delivery started again (a manual retry, a recovery, a redrive: the
# records api/requeue.py writes).
RESTARTED = "restarted"


def restarted(delivery: dict[str, Any]) -> bool:
    """A delivery started again, on its first go: it may follow an enable that this
    worker's view of the destination has not read yet (the API waits only for its own), so
    a destination that looks inactive or gone is looked up again before it is canceled."""
    return bool(delivery.get(RESTARTED)) and delivery["attempt"] == 0


def routable(destination: dict[str, Any] | None, generation: str | None) -> Cancel | None:
    """None if a delivery routed to `generation` may go to `destination` (its current
    record); otherwise why it is canceled."""
    if destination is None or destination.get("generation") != generation:
        return Cancel("deleted")
    if destination["status"] == "inactive":
        return Cancel("inactive")
    return None


def before_attempt(
    delivery: dict[str, Any],
    destination: dict[str, Any] | None,
    lane: LaneState,
    rules: Rules,
    *,
    now_ms: int,
) -> Before:
    """The delivery's turn has come (it arrived, or it is first in its lane's queue)."""
    canceled = routable(destination, delivery.get("destination_generation"))
    if canceled is not None:
        return canceled
    if lane.circuit_wait_s is not None and not asked_for_now(delivery):
        step = next_step(
            rules.schedule,
            delivery["attempt"],
            permanent=False,
            now_ms=now_ms,
            retry_after_s=lane.circuit_wait_s,
        )
        if isinstance(step, DeadLetter):
            step = DeadLetter(f"{SKIPPED_REASON}; retries exhausted")
        return Skip(step, disable=_disable(step, lane, rules, destination or {}))
    if rules.max_queue_wait_s and lane.queue_wait_s > rules.max_queue_wait_s:
        return Defer(defer_step(rules.schedule, lane.queue_wait_s, now_ms=now_ms))
    return Attempt()


def after_attempt(
    delivery: dict[str, Any],
    destination: dict[str, Any],
    error: DeliveryError | None,
    lane: LaneState,
    rules: Rules,
    *,
    now_ms: int,
) -> After:
    """The sink answered (`error` None: a success). What comes next, e.g. after a 503:
    the next retry tier (a later one if its Retry-After asks), or the DLQ once the retries
    are used up, and then perhaps an auto-disable."""
    if error is None:
        return Delivered(verify=not destination.get("verified_at"))
    step = after_failure(
        rules.schedule,
        delivery["attempt"],
        error,
        verified=bool(destination.get("verified_at")),
        credentials_age_s=credentials_age_s(destination, now_ms / 1000),
        now_ms=now_ms,
    )
    gone = isinstance(error, PermanentError) and error.response_status == 410
    if gone and not operator_destination(destination):
        return Failed(step, disable="the receiver answered 410 Gone")
    return Failed(step, disable=_disable(step, lane, rules, destination))


def _disable(
    step: Retry | DeadLetter, lane: LaneState, rules: Rules, destination: dict[str, Any]
) -> str | None:
    """Why the destination is disabled now, if this dead letter is one too many in a row.
    Never the operator sink: nothing could enable it again, and its alerts would stop."""
    if not isinstance(step, DeadLetter) or not step.counts_toward_disable:
        return None
    if operator_destination(destination):
        return None
    count = lane.dead_letters_in_row + 1
    if not rules.disable_after or count < rules.disable_after:
        return None
    return f"the last {count} deliveries exhausted their retries"


def credentials_age_s(destination: dict[str, Any], now_s: float) -> float:
    """Seconds since the destination last changed (its credentials with it)."""
    try:
        changed = datetime.fromisoformat(str(destination["updated_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return float("inf")
    return now_s - changed.timestamp()


def health_of(error: DeliveryError | None) -> tuple[Outcome, bool]:
    """What an attempt tells the destination's circuit, and whether the receiver is
    overloaded (a timeout, 429 or 503: its lane backs off)."""
    if error is None:
        return Outcome.SUCCESS, False
    if isinstance(error, PermanentError):
        return Outcome.PERMANENT, False
    overloaded = isinstance(error, RetryableError) and (
        error.response_status in OVERLOAD_STATUSES or error.timed_out
    )
    return Outcome.RETRYABLE, overloaded
