"""Writes what the delivery runner decides: attempts, retries, dead letters, status changes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    UnknownProducerId,
)

from pipeline import delivery_record, ids, metrics, tracing
from pipeline.outcome_log import OutcomeTally
from pipeline.retry import DeadLetter, Retry
from pipeline.sinks.base import DeliveryError, DeliveryResult
from pipeline.timeutil import now_iso
from pipeline.topics import ATTEMPTS, DESTINATION_CHANGES, DLQ, EVENTS

log = logging.getLogger(__name__)

RESPONSE_BODY_CHARS = 1024
# A dead letter's `last_error`: a summary, not the whole text.
LAST_ERROR_CHARS = 200
# A write the broker refuses with a retriable error (a broker restarting, a leader moving)
# is tried again, SEND_BACKOFF_S apart and doubling up to SEND_BACKOFF_MAX_S, until
# `give_up_s` after the first refusal; a fatal one (the producer's state is lost) at once.
SEND_BACKOFF_S = 0.5
SEND_BACKOFF_MAX_S = 5.0
# Refusals that mean the idempotent producer's state at the broker is gone (a broker
# restarted, say): a new producer (a new producer id) clears them, the same one never does.
PRODUCER_STATE_ERRORS = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch)
# A producer replaced while a send was on it: the send goes again on the new one.
REPLACED_PRODUCER_ERRORS = (*PRODUCER_STATE_ERRORS, ProducerClosed)


class RecorderUnavailable(Exception):
    """The broker would not take what the runner decided about a delivery, after retries.
    The delivery's offset must stay unfinished: the worker stops and a restarted one does
    the delivery again (never skipped)."""


def version_of(destination: dict[str, Any]) -> str:
    """The version of a destination record: it changes with every change that applied
    (enable, PATCH, re-create), not with changes the fold refused."""
    return str(destination.get("updated_at") or destination.get("change_id") or "")


class AttemptRecorder:
    """Every write is awaited (acks=all) before the runner marks a delivery finished.

    Each outcome is logged at DEBUG with the delivery's ids, and counted in `tally`, which
    logs one INFO summary per interval (pipeline/outcome_log.py).
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        due_header: str,
        *,
        give_up_s: float,
        send_backoff_s: float = SEND_BACKOFF_S,
        renew: Callable[[], Awaitable[AIOKafkaProducer]] | None = None,
        tally: OutcomeTally | None = None,
    ) -> None:
        self._producer = producer
        self.tally = tally if tally is not None else OutcomeTally()
        self._renew = renew  # a started producer in place of one whose state was lost
        self._renewing = asyncio.Lock()
        self._due_header = due_header
        self._give_up_s = give_up_s
        self._send_backoff_s = send_backoff_s
        self._verified_sent: set[str] = set()
        # Destination ref (tenant, id, generation) → the version of its record an
        # auto-disable was sent for: once per version, so a destination enabled again is
        # disabled again by the next failure.
        self._disable_sent: dict[str, str] = {}

    async def canceled(self, delivery: dict[str, Any], reason: str) -> None:
        """Record that the delivery will never be attempted (its destination was deleted or
        disabled): a final `canceled` outcome, so its status does not stay `pending`."""
        await self._attempt(delivery, "canceled", 0.0, None, None, reason, None)
        self.tally.count("canceled")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("delivery canceled: %s", reason, extra=_extra(delivery, outcome="canceled"))

    async def success(
        self, delivery: dict[str, Any], result: DeliveryResult, latency_ms: float
    ) -> None:
        """Record a successful attempt (a later run of failures may disable it again)."""
        self._disable_sent.pop(ids.ref_of_delivery(delivery), None)
        await self._attempt(
            delivery,
            "success",
            latency_ms,
            result.response_status,
            result.response_body,
            None,
            None,
        )
        self.tally.count("delivered")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("delivered", extra=_extra(delivery, outcome="success"))

    async def failure(
        self,
        delivery: dict[str, Any],
        exc: DeliveryError,
        latency_ms: float,
        step: Retry | DeadLetter,
    ) -> None:
        """Record a failed attempt and what comes next."""
        following = (
            {"dead_letter": step.reason}
            if isinstance(step, DeadLetter)
            else {"tier": step.tier, "due_ms": step.due_ms}
        )
        await self._attempt(
            delivery,
            "failed",
            latency_ms,
            exc.response_status,
            exc.response_body,
            str(exc),
            following,
        )
        self.tally.count("failed")
        if not log.isEnabledFor(logging.DEBUG):
            return
        if isinstance(step, DeadLetter):
            log.debug(
                "delivery failed: %s; dead-lettered (%s)",
                exc,
                step.reason,
                extra=_extra(delivery, outcome="failed"),
            )
        else:
            log.debug(
                "delivery failed: %s; retry tier %d",
                exc,
                step.tier,
                extra=_extra(delivery, outcome="failed", tier=step.tier),
            )

    async def retry(self, delivery: dict[str, Any], step: Retry, *, skipped: bool = False) -> None:
        """Queue the delivery in its next retry tier; `skipped`: its turn was skipped (an
        open circuit), which the record carries until a turn is not."""
        record = next_try(delivery, step, skipped=skipped)
        await self._send(
            step.topic,
            delivery_record.encode(record),
            _key(delivery),
            headers=self._tier_headers(step),
        )
        self.tally.count("retried")

    def skipped_again(self, delivery: dict[str, Any], step: Retry | DeadLetter) -> None:
        """A turn skipped while the circuit stays open, after the first (whose attempt
        record says why): logged at DEBUG only, and counted in the metrics."""
        log.debug(
            "delivery skipped again (circuit open)",
            extra=_extra(delivery, outcome="skipped", tier=getattr(step, "tier", None)),
        )

    async def defer(self, delivery: dict[str, Any], step: Retry, reason: str) -> None:
        """Queue the delivery in a retry tier without counting an attempt (its number stays)."""
        record = {**delivery, "due_at": step.due_ms}
        await self._send(
            step.topic,
            delivery_record.encode(record),
            _key(delivery),
            headers=self._tier_headers(step),
        )
        self.tally.count("retried")
        log.debug(
            "delivery deferred (%s) to retry tier %d",
            reason,
            step.tier,
            extra=_extra(delivery, outcome="deferred", tier=step.tier),
        )

    async def dead_letter(
        self, delivery: dict[str, Any], reason: str, last_error: str | None = None
    ) -> None:
        """Park the delivery in the DLQ, with the last attempt's error as the attempt log
        has it (shortened: `herald dlq` prints it as the line's summary)."""
        record = {**delivery, "dead_letter_reason": reason, "dead_lettered_at": now_iso()}
        if last_error is not None:
            record["last_error"] = last_error[:LAST_ERROR_CHARS]
        await self._send(DLQ, delivery_record.encode(record), _key(delivery))
        self.tally.count("dead_lettered")

    async def verified(self, destination: dict[str, Any]) -> None:
        """Append a `verified` change once per destination (generation) and process."""
        ref = ids.ref_of_destination(destination)
        if ref in self._verified_sent:
            return
        self._verified_sent.add(ref)
        await self._change(destination, "verified")

    async def auto_disable(self, destination: dict[str, Any], reason: str) -> bool:
        """Append an `auto_disable` change (the fold ignores it if already inactive) and
        tell the tenant's other subscribers with an `event_destination.disabled` event;
        False if this version of the destination was disabled already."""
        destination_id, version = destination["id"], version_of(destination)
        ref = ids.ref_of_destination(destination)
        if self._disable_sent.get(ref) == version or destination["status"] == "inactive":
            return False
        self._disable_sent[ref] = version
        await self._change(destination, "auto_disable", reason=reason)
        event = {
            "id": ids.new_id(ids.EVENT),
            "object": "event",
            "type": "event_destination.disabled",
            "data": {
                "destination_id": destination_id,
                "name": destination.get("name"),
                "reason": reason,
            },
            "created_at": now_iso(),
            "tenant": destination["tenant"],
        }
        await self.event(event["id"], orjson.dumps(event))
        metrics.AUTO_DISABLES.labels(type=destination["type"]).inc()
        log.warning(
            "destination auto-disabled: %s", reason, extra={"destination_id": destination_id}
        )
        return True

    async def event(self, key: str, value: bytes) -> None:
        """Write an event the runner makes (an auto-disable's, an operator event) to
        `events`, keyed by its id."""
        await self._send(EVENTS, value, key)

    async def _change(self, destination: dict[str, Any], op: str, **extra: str) -> None:
        """A change decided on this generation of the destination: the fold ignores it if
        the destination was deleted and created again meanwhile."""
        change = {
            "change_id": ids.new_id(ids.CHANGE),
            "op": op,
            "at": now_iso(),
            "destination_id": destination["id"],
            "generation": destination.get("generation"),
            **extra,
        }
        key = ids.change_key(destination["tenant"], destination["id"], destination)
        await self._send(DESTINATION_CHANGES, orjson.dumps(change), key)

    async def _attempt(
        self,
        delivery: dict[str, Any],
        outcome: str,
        latency_ms: float,
        status: int | None,
        body: str | None,
        error: str | None,
        following: dict[str, Any] | None,
    ) -> None:
        event = delivery["event"]
        attempt = {
            "id": ids.new_id(ids.ATTEMPT),
            "delivery_id": delivery["id"],
            "event_id": event["id"],
            "event_type": event["type"],
            "tenant": delivery["tenant"],
            "destination_id": delivery["destination_id"],
            "destination_generation": delivery.get("destination_generation"),
            "attempt": delivery["attempt"],
            "outcome": outcome,
            "response_status": status,
            "latency_ms": round(latency_ms, 2),
            "error": error,
            "response_body": body[:RESPONSE_BODY_CHARS] if body else body,
            "next": following,
            "created_at": now_iso(),
        }
        await self._send(ATTEMPTS, orjson.dumps(attempt), _key(delivery))

    def _tier_headers(self, step: Retry) -> list[tuple[str, bytes]]:
        """A retry-tier record's headers: when it is due, and the current trace context (the
        attempt's record span, or the context the delivery arrived with) if it is traced."""
        headers = [(self._due_header, str(step.due_ms).encode())]
        if tracing.enabled():
            headers += tracing.current_headers()
        return headers

    async def _send(
        self,
        topic: str,
        value: bytes,
        key: str,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Write one record and wait for the broker's acknowledgement; a refusal is counted
        and, if retriable, tried again until `give_up_s` has passed, then (or at once for a
        fatal one) RecorderUnavailable. A producer whose state the broker lost is replaced
        once, and the record sent again on the new one."""
        delay_s = self._send_backoff_s
        deadline: float | None = None
        fresh_tries = 1
        while True:
            producer = self._producer
            try:
                await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)
                return
            except KafkaError as exc:
                metrics.KAFKA_PRODUCE_ERRORS.labels(topic=topic).inc()
                if fresh_tries and await self._replaced(producer, exc):
                    fresh_tries -= 1
                    continue
                now = time.monotonic()
                deadline = now + self._give_up_s if deadline is None else deadline
                # A send that timed out (the broker restarting) is worth another try within
                # give_up_s: giving up stops the worker, and its successor redoes everything
                # since the last commit. If the first copy did land, a second attempt record
                # (same id) is dropped by the index, and a second retry record makes one more
                # attempt: far fewer repeats than a restart.
                retriable = exc.retriable or isinstance(exc, KafkaTimeoutError)
                if not retriable or now >= deadline:
                    raise RecorderUnavailable(f"{topic}: {type(exc).__name__}") from exc
                log.warning("writing to %s failed (%s); trying again", topic, type(exc).__name__)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, SEND_BACKOFF_MAX_S)

    async def _replaced(self, failed: AIOKafkaProducer, exc: KafkaError) -> bool:
        """Whether the producer that refused is now replaced by a fresh one (by this send,
        for a lost producer state, or by another send meanwhile)."""
        if not isinstance(exc, REPLACED_PRODUCER_ERRORS) or self._renew is None:
            return False
        async with self._renewing:
            if self._producer is failed and isinstance(exc, PRODUCER_STATE_ERRORS):
                log.warning(
                    "the broker lost the producer's state (%s); using a new producer",
                    type(exc).__name__,
                )
                self._producer = await self._renew()
        return self._producer is not failed


def next_try(delivery: dict[str, Any], step: Retry, *, skipped: bool) -> dict[str, Any]:
    """The delivery as its next try (`step`) carries it: in a retry tier's record, or kept
    in place by the runner (a key's head, pipeline/ordering.py). `skipped`: this turn was
    skipped (an open circuit), which it carries until a turn is not."""
    attempt = step.attempt if step.attempt is not None else delivery["attempt"] + 1
    record = {**delivery, "attempt": attempt, "due_at": step.due_ms}
    if skipped:
        record["skipped"] = True
    else:
        record.pop("skipped", None)
    return record


def _key(delivery: dict[str, Any]) -> str:
    """Records about a delivery are keyed like it: `tenant/destination id`."""
    return ids.scoped(delivery["tenant"], delivery["destination_id"])


def _extra(delivery: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "event_id": delivery["event"]["id"],
        "delivery_id": delivery["id"],
        "destination_id": delivery["destination_id"],
        "attempt": delivery["attempt"],
        **more,
    }
