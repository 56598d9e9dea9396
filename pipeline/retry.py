"""What happens after a failed attempt: the next retry tier, or the dead-letter topic. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.topics import DLQ, retry_topic

# A destination's Retry-After is honoured up to this long; longer hints are capped.
MAX_RETRY_AFTER_S = 6 * 3600


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
    """Send the delivery to `topic` (tier `tier`), due at `due_ms`."""

    topic: str
    tier: int
    due_ms: int


@dataclass(frozen=True)
class DeadLetter:
    """Give up: send the delivery to the DLQ."""

    reason: str
    topic: str = DLQ


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
    tier whose delay covers it, so due times keep rising within every tier topic.
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
    return Retry(retry_topic(tier), tier, now_ms + int(schedule.delay_s(tier) * 1000))


def defer_step(schedule: Schedule, wait_s: float, *, now_ms: int) -> Retry:
    """Where a delivery waits that is put off without an attempt (an open circuit, a full
    destination queue): the first tier whose delay covers `wait_s` (the last tier if none
    does), due one tier delay from now, so due times keep rising within the tier."""
    tier = 1
    while tier < schedule.max_retries and schedule.delay_s(tier) < wait_s:
        tier += 1
    return Retry(retry_topic(tier), tier, now_ms + int(schedule.delay_s(tier) * 1000))
