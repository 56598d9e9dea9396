"""What an attempt came to, recorded: a success, a failure and its next step (decided in
pipeline/retry.py), a delivery put off without an attempt or canceled, and the auto-disable
that follows dead letters or a 410. The delivery runner calls it; every write goes through
the recorder.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from pipeline import metrics
from pipeline.attempts import AttemptRecorder, version_of
from pipeline.ids import ref_of_destination
from pipeline.retry import DeadLetter, Schedule, after_failure, defer_step
from pipeline.sinks.base import DeliveryError, DeliveryResult, PermanentError, RetryableError

log = logging.getLogger(__name__)

# What the attempt log says of an error Herald did not expect (a bug, or a sink's library
# failing in a way it does not map): its text is not shown, since it may quote a secret.
UNEXPECTED_ERROR = "internal error while delivering (logged by the worker)"


def unexpected(exc: Exception, delivery: dict[str, Any]) -> RetryableError:
    """A retryable failure with a generic text for an exception that is no DeliveryError;
    logged with its type and where it was raised, never its message."""
    metrics.DELIVERY_HANDLING_ERRORS.inc()
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else "?"
    log.error(
        "unexpected %s while delivering (at %s); recorded as a retryable failure",
        type(exc).__name__,
        where,
        extra={"delivery_id": delivery.get("id"), "destination_id": delivery.get("destination_id")},
    )
    return RetryableError(UNEXPECTED_ERROR)


def _age_s(destination: dict[str, Any], now_s: float) -> float:
    """Seconds since the destination last changed (its credentials with it)."""
    try:
        changed = datetime.fromisoformat(str(destination["updated_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return float("inf")
    return now_s - changed.timestamp()


class Outcomes:
    """Records outcomes for one worker's runner; counts dead letters per destination."""

    def __init__(self, recorder: AttemptRecorder, schedule: Schedule, disable_after: int) -> None:
        self._recorder = recorder
        self._schedule = schedule
        self._disable_after = disable_after
        # Destination ref (tenant, id, generation) → (record version, deliveries in a row
        # dead-lettered) in this process: a destination enabled again or changed starts
        # counting anew.
        self._dead_letters: dict[str, tuple[str, int]] = {}

    async def succeeded(
        self,
        delivery: dict[str, Any],
        destination: dict[str, Any],
        result: DeliveryResult,
        latency_ms: float,
    ) -> None:
        """Record a success; the first one verifies the destination."""
        await self._recorder.success(delivery, result, latency_ms)
        # Counted once recorded: a delivery whose attempt could not be recorded is redone.
        metrics.record_attempt(
            destination["type"], "success", delivery["attempt"], latency_ms / 1000
        )
        metrics.record_delivered(destination["type"], delivery["event"]["created_at"], time.time())
        self._dead_letters.pop(ref_of_destination(destination), None)
        if not destination.get("verified_at"):
            await self._recorder.verified(destination)

    async def failed(
        self,
        delivery: dict[str, Any],
        destination: dict[str, Any],
        exc: DeliveryError,
        latency_ms: float,
    ) -> None:
        """Record a failed attempt and queue what comes next (a retry tier or the DLQ)."""
        now_s = time.time()
        step = after_failure(
            self._schedule,
            delivery["attempt"],
            exc,
            verified=bool(destination.get("verified_at")),
            credentials_age_s=_age_s(destination, now_s),
            now_ms=int(now_s * 1000),
        )
        await self._recorder.failure(delivery, exc, latency_ms, step)
        metrics.record_attempt(
            destination["type"], "failed", delivery["attempt"], latency_ms / 1000
        )
        if isinstance(step, DeadLetter):
            await self.dead_lettered(delivery, destination, step)
        else:
            await self._recorder.retry(delivery, step)
        if isinstance(exc, PermanentError) and exc.response_status == 410:
            await self._recorder.auto_disable(destination, "the receiver answered 410 Gone")

    async def deferred(
        self,
        delivery: dict[str, Any],
        destination: dict[str, Any],
        wait_s: float,
        *,
        reason: str = "circuit_open",
        give_up: bool = False,
    ) -> None:
        """Put the delivery off to a retry tier without an attempt. Time put off by an open
        circuit adds up; past `circuit_max_hold_s` (`give_up`) the delivery is dead-lettered
        instead, recorded as a failed attempt that was not made so the log shows why. A full
        queue never dead-letters: its destination is making progress, or its circuit opens."""
        if give_up:
            dead = DeadLetter("not attempted: circuit open for too long")
            await self._recorder.failure(delivery, RetryableError(dead.reason), 0.0, dead)
            await self.dead_lettered(delivery, destination, dead)
            return
        step = defer_step(self._schedule, wait_s, now_ms=int(time.time() * 1000))
        held = reason == "circuit_open"
        await self._recorder.defer(delivery, step, reason.replace("_", " "), held=held)
        metrics.DELIVERIES_DEFERRED.labels(type=destination["type"], reason=reason).inc()

    async def canceled(self, delivery: dict[str, Any], reason: str) -> None:
        """The delivery's destination is gone (`deleted`) or `inactive`: a final `canceled`
        record, so its status does not stay pending."""
        metrics.DELIVERIES_DROPPED.labels(reason=reason).inc()
        await self._recorder.canceled(delivery, f"destination {reason}")

    async def dead_lettered(
        self, delivery: dict[str, Any], destination: dict[str, Any], step: DeadLetter
    ) -> None:
        """Park the delivery in the DLQ; enough in a row (of the destination's own making)
        disable the destination."""
        await self._recorder.dead_letter(delivery, step.reason)
        metrics.DEAD_LETTERS.labels(type=destination["type"]).inc()
        if not step.counts_toward_disable:
            return
        ref, version = ref_of_destination(destination), version_of(destination)
        counted_version, count = self._dead_letters.get(ref, (version, 0))
        count = count + 1 if counted_version == version else 1
        self._dead_letters[ref] = (version, count)
        if self._disable_after and count >= self._disable_after:
            await self._recorder.auto_disable(
                destination, f"the last {count} deliveries exhausted their retries"
            )
