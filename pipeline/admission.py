"""Whether, and when, the delivery runner attempts a delivery: per-destination state.

Three guards, all in memory per worker process: a bound on the deliveries a destination
may have outstanding (head-of-line protection), its circuit breaker (pipeline/circuit.py)
and its rate limit (pipeline/pacing.py). Circuits and pacing are kept per destination ref
(tenant, id and generation): a destination created again under a deleted one's id starts
fresh. The runner asks in that order and does the I/O
(putting a delivery off, recording attempts); this module only decides and keeps count.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline import metrics
from pipeline.circuit import CircuitBreakers, Outcome
from pipeline.ids import ref_of_delivery, ref_of_destination
from pipeline.pacing import Pacer
from pipeline.retry import Schedule
from pipeline.settings import Settings

log = logging.getLogger(__name__)

# POST /v2/event-destinations/{id}/test publishes this type (api/destinations.py).
TEST_EVENT_TYPE = "event_destination.test"


def asked_for_now(delivery: dict[str, Any]) -> bool:
    """A manual retry or a test event, on its first go: the user asked for an attempt now
    (typically to check a fix), so it passes an open circuit, and its outcome counts."""
    manual = delivery.get("manual_retry") or delivery["event"]["type"] == TEST_EVENT_TYPE
    return bool(manual) and delivery["attempt"] == 0


class Admission:
    """The three guards of one worker's delivery runner."""

    def __init__(self, settings: Settings, schedule: Schedule) -> None:
        self._bound = settings.sink_max_queued_per_destination
        self._outstanding: dict[bytes, int] = {}  # by record key: tenant/destination id
        self._circuits = CircuitBreakers(
            settings.circuit_failure_threshold,
            settings.circuit_cooldown_s,
            settings.circuit_max_cooldown_s,
        )
        self._pacer = Pacer()
        hold_s = settings.circuit_max_hold_s or sum(
            schedule.delay_s(n) for n in range(1, schedule.max_retries + 1)
        )
        self._max_hold_ms = hold_s * 1000

    def enqueue(self, key: bytes) -> bool:
        """Count one more outstanding delivery for the destination keyed `key`; False (and
        nothing counted) if it already has its bound: put this one off."""
        count = self._outstanding.get(key, 0)
        if self._bound and count >= self._bound:
            return False
        self._outstanding[key] = count + 1
        return True

    def finished(self, key: bytes) -> None:
        """An enqueued delivery is done (however it ended)."""
        left = self._outstanding.get(key, 0) - 1
        if left > 0:
            self._outstanding[key] = left
        else:
            self._outstanding.pop(key, None)

    def circuit_wait_s(self, delivery: dict[str, Any]) -> float | None:
        """None: attempt it now. Otherwise its destination's circuit is open: put it off
        for about this long."""
        if asked_for_now(delivery):
            return None
        return self._circuits.admit(ref_of_delivery(delivery))

    def held_too_long(self, delivery: dict[str, Any]) -> bool:
        """Has an open circuit held this delivery for `circuit_max_hold_s` in all?"""
        return int(delivery.get("held_ms") or 0) >= self._max_hold_ms

    async def pace(self, destination: dict[str, Any]) -> None:
        """Wait for the destination's rate limit, if it has one."""
        if destination.get("rate_limit"):
            await self._pacer.wait(ref_of_destination(destination), destination["rate_limit"])

    def outcome(self, destination: dict[str, Any], outcome: Outcome) -> None:
        """Tell the destination's circuit how an attempt went (counted and logged when the
        circuit opens or closes)."""
        change = self._circuits.record(ref_of_destination(destination), outcome)
        if change is None:
            return
        metrics.CIRCUIT_CHANGES.labels(type=destination["type"], state=change).inc()
        log.warning("destination circuit %s", change, extra={"destination_id": destination["id"]})

    def observe(self) -> None:
        """Set the open circuits gauge."""
        metrics.CIRCUITS_OPEN.set(self._circuits.open_count())
