"""What the policy (pipeline/policy.py) decided for a delivery, written: a success, a failed
attempt and its next step, one skipped or put off without an attempt, one canceled, and
the auto-disable that follows dead letters or a 410. Every write goes through the
recorder; metrics count an outcome only once it is recorded.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pipeline import metrics
from pipeline.attempts import AttemptRecorder, version_of
from pipeline.ids import ref_of_destination
from pipeline.operator_events import RunnerEvents
from pipeline.policy import Defer, Delivered, Failed, Skip
from pipeline.retry import DeadLetter, Retry
from pipeline.sinks.base import DeliveryError, DeliveryResult, RetryableError

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


class Outcomes:
    """Writes what the policy decided for one worker's runner; counts each destination's
    deliveries dead-lettered in a row (the policy disables it after enough)."""

    def __init__(self, recorder: AttemptRecorder, operator: RunnerEvents | None = None) -> None:
        self._recorder = recorder
        self._operator = operator or RunnerEvents.off()
        # Destination ref (tenant, id, generation) → (record version, deliveries in a row
        # dead-lettered) in this process: a destination enabled again or changed starts
        # counting anew.
        self._dead_letters: dict[str, tuple[str, int]] = {}

    def dead_letters_in_row(self, destination: dict[str, Any]) -> int:
        """The destination's deliveries dead-lettered in a row, in its current version."""
        if not destination:
            return 0
        version, count = self._dead_letters.get(ref_of_destination(destination), ("", 0))
        return count if version == version_of(destination) else 0

    async def delivered(
        self,
        delivery: dict[str, Any],
        destination: dict[str, Any],
        result: DeliveryResult,
        latency_ms: float,
        decision: Delivered,
    ) -> None:
        """Record a success; the first one verifies the destination."""
        await self._recorder.success(delivery, result, latency_ms)
        # Counted once recorded: a delivery whose attempt could not be recorded is redone.
        metrics.record_attempt(
            destination["type"], "success", delivery["attempt"], latency_ms / 1000
        )
        metrics.record_delivered(destination["type"], delivery["event"]["created_at"], time.time())
        self._dead_letters.pop(ref_of_destination(destination), None)
        if decision.verify:
            await self._recorder.verified(destination)

    async def failed(
        self,
        delivery: dict[str, Any],
        destination: dict[str, Any],
        exc: DeliveryError,
        latency_ms: float,
        decision: Failed,
        *,
        in_place: bool = False,
    ) -> None:
        """Record a failed attempt and queue what comes next (a retry tier or the DLQ);
        `in_place`: the runner keeps the delivery for its retry (a key's head), so no retry
        record is written."""
        in_row = self._count_dead_letter(destination, decision.step)
        await self._recorder.failure(delivery, exc, latency_ms, decision.step)
        metrics.record_attempt(
            destination["type"], "failed", delivery["attempt"], latency_ms / 1000
        )
        self._operator.attempt_failed(delivery, destination, exc.response_status)
        await self._follow(
            delivery,
            destination,
            decision.step,
            decision.disable,
            in_row,
            last_error=str(exc),
            in_place=in_place,
        )

    async def skipped(
        self,
        delivery: dict[str, Any],
        destination: dict[str, Any],
        decision: Skip,
        *,
        in_place: bool = False,
    ) -> None:
        """Not attempted, its circuit open: on to its next scheduled retry (or the DLQ) like
        a failed one. The first skip in a row is written to the attempt log as an attempt
        that was not made (so the log says why nothing happens), and so is a dead letter;
        the skips between cost one retry record each and nothing in the log."""
        in_row = self._count_dead_letter(destination, decision.step)
        first = not delivery.get("skipped")
        if first or isinstance(decision.step, DeadLetter):
            error = RetryableError(decision.reason)
            await self._recorder.failure(delivery, error, 0.0, decision.step)
        else:
            self._recorder.skipped_again(delivery, decision.step)
        metrics.DELIVERIES_DEFERRED.labels(type=destination["type"], reason="circuit_open").inc()
        await self._follow(
            delivery,
            destination,
            decision.step,
            decision.disable,
            in_row,
            skipped=True,
            in_place=in_place,
        )

    async def deferred(
        self, delivery: dict[str, Any], destination: dict[str, Any], decision: Defer
    ) -> None:
        """Put off to a retry tier without an attempt and without using a retry: its
        destination's lane is too far behind. Never dead-letters: a slow destination is
        making progress, or its circuit opens."""
        await self._recorder.defer(delivery, decision.step, decision.reason.replace("_", " "))
        metrics.DELIVERIES_DEFERRED.labels(type=destination["type"], reason=decision.reason).inc()

    async def canceled(self, delivery: dict[str, Any], reason: str) -> None:
        """The delivery's destination is gone (`deleted`) or `inactive`: a final `canceled`
        record, so its status does not stay pending."""
        metrics.DELIVERIES_DROPPED.labels(reason=reason).inc()
        await self._recorder.canceled(delivery, f"destination {reason}")

    async def _follow(
        self,
        delivery: dict[str, Any],
        destination: dict[str, Any],
        step: Retry | DeadLetter,
        disable: str | None,
        in_row: int,
        *,
        skipped: bool = False,
        last_error: str | None = None,
        in_place: bool = False,
    ) -> None:
        """Queue the next retry (unless the runner keeps it `in_place`), or park the
        delivery in the DLQ (with the attempt's error, if one was made; `in_row`: the
        destination's dead letters in a row with this one); then disable the destination if
        decided."""
        if isinstance(step, DeadLetter):
            await self._recorder.dead_letter(delivery, step.reason, last_error)
            metrics.DEAD_LETTERS.labels(type=destination["type"]).inc()
            self._operator.dead_lettered(destination, step.reason, in_row)
        elif not in_place:
            await self._recorder.retry(delivery, step, skipped=skipped)
        if disable is not None and await self._recorder.auto_disable(destination, disable):
            self._operator.disabled(destination, disable)

    def _count_dead_letter(self, destination: dict[str, Any], step: Retry | DeadLetter) -> int:
        """Count `step` if it is a dead letter where the destination was at fault; the dead
        letters in a row now (0 if it is not one). Called before the outcome's first await,
        in the step the runner decided it in: a delivery of the destination deciding while
        this one's records are written sees it (five dead letters at once disable at the
        fifth, not at a sixth). A write that fails stops the worker, count and all."""
        if not isinstance(step, DeadLetter) or not step.counts_toward_disable:
            return 0
        ref, version = ref_of_destination(destination), version_of(destination)
        count = self.dead_letters_in_row(destination) + 1
        self._dead_letters[ref] = (version, count)
        return count
