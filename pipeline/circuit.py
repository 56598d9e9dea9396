"""Circuit breakers, one per destination, so a dead receiver is not sent every delivery.

    closed ──(threshold retryable failures in a row)──► open
    open ──(cool-down passed; the next delivery is the probe)──► half-open
    half-open ──probe succeeds──► closed        half-open ──probe fails──► open

While a circuit is open its deliveries are not attempted: the delivery runner moves each
one on to its next scheduled retry without an attempt (pipeline/policy.py), so a dead
destination costs one record per scheduled retry, never one per cool-down. Each failed
probe doubles the cool-down, up to a ceiling. Only retryable failures count (timeouts,
refused connections, 5xx …): a permanent one says nothing about whether the receiver is
reachable. A success closes the circuit in any state. State is per worker process, in
memory: a restart starts closed, and two workers holding partitions of one destination
each learn its health themselves. Pure apart from the clock; the runner owns the I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Outcome(Enum):
    """What an admitted attempt came to, as far as the breaker cares."""

    SUCCESS = "success"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


@dataclass
class _Circuit:
    failures: int = 0
    opened_at_s: float | None = None  # None: closed
    cooldown_s: float = 0.0
    probe_started_s: float | None = None  # half-open: the probe in flight


class CircuitBreakers:
    """Decides, per destination, whether a delivery may be attempted now."""

    def __init__(
        self,
        failure_threshold: int,
        cooldown_s: float,
        max_cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._max_cooldown_s = max(cooldown_s, max_cooldown_s)
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def admit(self, destination_id: str) -> float | None:
        """None: attempt the delivery now (the circuit is closed, or this is the probe).
        Otherwise the seconds until the circuit may let a probe through: defer it."""
        circuit = self._circuits.get(destination_id)
        if circuit is None or circuit.opened_at_s is None:
            return None
        now_s = self._clock()
        if circuit.probe_started_s is not None:
            # A probe whose outcome never came back (its task died) frees the way after a
            # cool-down of its own, so a circuit can never stay half-open for good.
            if now_s - circuit.probe_started_s < circuit.cooldown_s:
                return circuit.cooldown_s
        elif now_s - circuit.opened_at_s < circuit.cooldown_s:
            return circuit.opened_at_s + circuit.cooldown_s - now_s
        circuit.probe_started_s = now_s
        return None

    def peek(self, destination_id: str) -> float | None:
        """Like `admit`, but a probe is not started: None if a delivery arriving now would
        be let through (closed, or the cool-down is over); otherwise the seconds to wait."""
        circuit = self._circuits.get(destination_id)
        if circuit is None or circuit.opened_at_s is None:
            return None
        now_s = self._clock()
        if circuit.probe_started_s is not None:
            left_s = circuit.probe_started_s + circuit.cooldown_s - now_s
        else:
            left_s = circuit.opened_at_s + circuit.cooldown_s - now_s
        return left_s if left_s > 0 else None

    def is_open(self, destination_id: str) -> bool:
        """Whether the destination's circuit is open or half-open."""
        circuit = self._circuits.get(destination_id)
        return circuit is not None and circuit.opened_at_s is not None

    def record(self, destination_id: str, outcome: Outcome) -> str | None:
        """Note an admitted attempt's outcome; returns "open" or "closed" if the circuit
        just changed to that state."""
        if self._threshold <= 0:
            return None
        circuit = self._circuits.get(destination_id)
        if outcome is Outcome.SUCCESS:
            self._circuits.pop(destination_id, None)
            return "closed" if circuit is not None and circuit.opened_at_s is not None else None
        if circuit is None:
            circuit = self._circuits[destination_id] = _Circuit()
        if outcome is Outcome.PERMANENT:
            circuit.probe_started_s = None  # the probe is over; the next delivery probes
            return None
        if circuit.probe_started_s is not None:  # the probe failed: open again, for longer
            circuit.probe_started_s = None
            circuit.opened_at_s = self._clock()
            circuit.cooldown_s = min(circuit.cooldown_s * 2, self._max_cooldown_s)
            return "open"
        circuit.failures += 1
        if circuit.opened_at_s is None and circuit.failures >= self._threshold:
            circuit.opened_at_s = self._clock()
            circuit.cooldown_s = self._cooldown_s
            return "open"
        return None

    def open_count(self) -> int:
        """How many circuits are open or half-open in this process."""
        return sum(1 for c in self._circuits.values() if c.opened_at_s is not None)
