"""What happens after a failed attempt: the next retry tier, or the dead-letter topic. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.sinks.base import DeliveryError, EventRejected, PermanentError, RetryableError
from pipeline.topics import DLQ, retry_topic

# A destination's Retry-After is honoured up to this long; longer hints are capped.
MAX_RETRY_AFTER_S = 6 * 3600
# A destination never delivered to whose credentials are refused within this long of its
# last change is retried: a brand-new cloud key (an IAM key) is not valid for a few seconds.
NEW_CREDENTIALS_GRACE_S = 120.0


@dataclass(frozen=True)
class Schedule:
    """Retry delays: tier n waits base_delay_s * 2^(n-1); at most max_retries tiers."""

    base_delay_s: float = 30.0
    max_retries: int = 10

    def delay_s(self, tier: int) -> float:
        """The fixed delay of retry tier `tier` (1-based)."""
        return float(self.base_delay_s * 2 ** (tier - 1))


@dataclass(frozen=True)
class Retry:
    """Send the delivery to `topic` (tier `tier`), due at `due_ms`, as attempt number
    `attempt` (None: it keeps its number, as a delivery put off without an attempt does).
    The tier follows the due time, the attempt number only the attempts made."""

    topic: str
    tier: int
    due_ms: int
    attempt: int | None = None


@dataclass(frozen=True)
class DeadLetter:
    """Give up: send the delivery to the DLQ. `counts_toward_disable` is False when the
    event, not the destination, was at fault (it never leads to an auto-disable)."""

    reason: str
    topic: str = DLQ
    counts_toward_disable: bool = True


def next_step(
    schedule: Schedule,
    attempt: int,
    *,
    permanent: bool,
    now_ms: int,
    retry_after_s: float | None = None,
) -> Retry | DeadLetter:
    """After attempt number `attempt` (0 = the first) failed, what comes next.

    A Retry-After hint longer than the next tier's delay moves the delivery to the first
    tier whose delay covers it, so due times keep rising within every tier topic; it moves
    only the due time: the next attempt is still number `attempt + 1`, so a long hint does
    not use up the retries.
    """
    if permanent:
        return DeadLetter("permanent failure")
    tier = attempt + 1
    if tier > schedule.max_retries:
        return DeadLetter(f"retries exhausted after {attempt + 1} attempts")
    if retry_after_s is not None:
        wanted_s = min(retry_after_s, MAX_RETRY_AFTER_S)
        while tier < schedule.max_retries and schedule.delay_s(tier) < wanted_s:
            tier += 1
    return Retry(retry_topic(tier), tier, now_ms + int(schedule.delay_s(tier) * 1000), attempt + 1)


def after_failure(
    schedule: Schedule,
    attempt: int,
    error: DeliveryError,
    *,
    verified: bool,
    credentials_age_s: float,
    now_ms: int,
) -> Retry | DeadLetter:
    """What comes after attempt `attempt` failed with `error`, by the kind of error.

    An event the destination cannot take is dead-lettered at once and does not count
    toward auto-disable. Refused credentials of a destination never delivered to are
    retried for NEW_CREDENTIALS_GRACE_S after its last change. Otherwise a PermanentError
    is dead-lettered and anything else retried on the schedule (next_step).
    """
    if isinstance(error, EventRejected):
        return DeadLetter("the destination cannot take this event", counts_toward_disable=False)
    permanent = isinstance(error, PermanentError) and (
        not error.auth or verified or credentials_age_s >= NEW_CREDENTIALS_GRACE_S
    )
    retry_after_s = error.retry_after_s if isinstance(error, RetryableError) else None
    return next_step(
        schedule, attempt, permanent=permanent, now_ms=now_ms, retry_after_s=retry_after_s
    )


def defer_step(schedule: Schedule, wait_s: float, *, now_ms: int) -> Retry:
    """Where a delivery waits that is put off without an attempt (an open circuit, a full
    destination queue): the first tier whose delay covers `wait_s` (the last tier if none
    does), due one tier delay from now, so due times keep rising within the tier."""
    tier = 1
    while tier < schedule.max_retries and schedule.delay_s(tier) < wait_s:
        tier += 1
    return Retry(retry_topic(tier), tier, now_ms + int(schedule.delay_s(tier) * 1000))
