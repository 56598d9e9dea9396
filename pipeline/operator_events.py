"""Operator events: lifecycle alerts about tenants' destinations, for the platform's on-call.

They are ordinary events of a reserved tenant, OPERATOR_TENANT, written to `events`; its one
destination, the operator sink (registered by the API at start-up, api/operator_sink.py),
gets them through the router, the runner and its sink like any delivery: retried, signed,
recorded. No API key, platform key or tenant record may name that tenant.

The API emits `destination.created/updated/deleted` once its change is folded; the runner's
outcomes (pipeline/outcomes.py) emit `destination.disabled`,
`destination.consecutive_failures`, `delivery.exhausted_retries` and, if switched on,
`attempt.failed`. Emitting never waits for the broker and never raises: an `Emitter` buffers
a bounded number of events and a task of its own writes them; what does not fit, or goes
past a destination's rate, is dropped and counted (`herald_operator_events_dropped_total`).
Nothing about the operator tenant's own destination is ever emitted, so a failing operator
sink cannot feed itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from pipeline import ids, metrics
from pipeline.pacing import TokenBucket
from pipeline.timeutil import now_iso

if TYPE_CHECKING:
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

# The tenant operator events belong to; tenant ids of the API and of configured keys may
# not name it (api/validation.py `tenant_id`, pipeline/settings.py).
OPERATOR_TENANT = "herald-operator"
# The operator sink's destination id within that tenant.
OPERATOR_SINK_ID = "evtd_operator_sink"

CREATED = "destination.created"
UPDATED = "destination.updated"
DELETED = "destination.deleted"
DISABLED = "destination.disabled"
CONSECUTIVE_FAILURES = "destination.consecutive_failures"
EXHAUSTED_RETRIES = "delivery.exhausted_retries"
ATTEMPT_FAILED = "attempt.failed"
TYPES = (
    CREATED, UPDATED, DELETED, DISABLED, CONSECUTIVE_FAILURES, EXHAUSTED_RETRIES, ATTEMPT_FAILED,
)  # fmt: skip

# How often the sender looks for exhausted-retries windows that ended with deliveries
# still to report.
FLUSH_INTERVAL_S = 1.0
# Rate buckets and windows kept before idle ones are forgotten.
MAX_TRACKED_DESTINATIONS = 10_000

# Writes (key, value) to `events` and waits for the broker's acknowledgement.
Send = Callable[[str, bytes], Awaitable[object]]


def reserved_tenant(tenant_id: object) -> bool:
    """True for the tenant id no key, header or tenant record may name."""
    return tenant_id == OPERATOR_TENANT


def operator_destination(destination: dict[str, Any]) -> bool:
    """True for the operator tenant's own destination (the sink): nothing about it is
    emitted, and the runner never auto-disables it (no one could enable it again)."""
    return reserved_tenant(destination.get("tenant"))


def _about(destination: dict[str, Any]) -> dict[str, Any]:
    """What every event says of its destination: ids, type, name and status; never its
    config (a URL may carry a token) nor its credentials."""
    return {
        "tenant_id": destination.get("tenant"),
        "destination_id": destination.get("id"),
        "destination_type": destination.get("type"),
        "name": destination.get("name"),
        "status": destination.get("status"),
    }


@dataclass
class _Window:
    started_s: float
    destination: dict[str, Any]
    suppressed: int = 0
    reason: str = ""


class Emitter:
    """Buffers operator events and writes them from a task of its own, started at the
    first `emit`; `aclose` stops it. Each destination has a token bucket (`burst`,
    refilled at `per_hour`), so a flapping destination cannot flood the on-call tool."""

    def __init__(
        self,
        send: Send,
        *,
        buffer: int,
        burst: int,
        per_hour: float,
        exhausted_window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._buffer: deque[tuple[str, bytes, str]] = deque()
        self._capacity = buffer
        self._burst = burst
        self._refill_per_s = per_hour / 3600
        self._window_s = exhausted_window_s
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._windows: dict[str, _Window] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def buffered(self) -> int:
        """Events waiting to be written."""
        return len(self._buffer)

    def emit(self, event_type: str, destination: dict[str, Any], /, **data: Any) -> None:
        """Queue one event about `destination` (a folded record, or its ids); never waits,
        never raises. Dropped if it concerns the operator sink itself."""
        if operator_destination(destination):
            return
        key = ids.scoped(str(destination.get("tenant")), str(destination.get("id")))
        if not self._take_token(key):
            metrics.OPERATOR_EVENTS_DROPPED.labels(reason="rate_limited").inc()
            return
        if len(self._buffer) >= self._capacity:
            metrics.OPERATOR_EVENTS_DROPPED.labels(reason="buffer_full").inc()
            return
        event_id = ids.new_id(ids.EVENT)
        event = {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "data": {**_about(destination), **data},
            "created_at": now_iso(),
            "tenant": OPERATOR_TENANT,
        }
        self._buffer.append((event_id, orjson.dumps(event), event_type))
        self._ensure_sender()
        self._wake.set()

    def exhausted(self, destination: dict[str, Any], reason: str) -> None:
        """A delivery to `destination` exhausted its retries: the first of a window is
        emitted at once, the rest of the window are counted and emitted as one event when
        it ends (`count`): at most one event per destination per window."""
        if operator_destination(destination):
            return
        key = ids.scoped(str(destination.get("tenant")), str(destination.get("id")))
        now_s = self._clock()
        window = self._windows.get(key)
        if window is not None and now_s - window.started_s < self._window_s:
            window.suppressed += 1
            window.destination, window.reason = destination, reason
            self._ensure_sender()
            return
        self._windows[key] = _Window(now_s, destination)
        self._emit_exhausted(destination, 1, reason)

    def flush_windows(self) -> None:
        """Emit the count of every window that ended with deliveries not reported yet
        (which starts a new window); forget the ones that ended with none."""
        now_s = self._clock()
        for key, window in list(self._windows.items()):
            if now_s - window.started_s < self._window_s:
                continue
            if window.suppressed:
                self._windows[key] = _Window(now_s, window.destination)
                self._emit_exhausted(window.destination, window.suppressed, window.reason)
            else:
                del self._windows[key]

    def _emit_exhausted(self, destination: dict[str, Any], count: int, reason: str) -> None:
        self.emit(EXHAUSTED_RETRIES, destination, count=count, window_s=self._window_s,
                  reason=reason)  # fmt: skip

    def _take_token(self, key: str) -> bool:
        now_s = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_DESTINATIONS:
                # Buckets that refilled can go: forgetting them changes nothing.
                for full in [k for k, b in self._buckets.items() if b.full(now_s)]:
                    del self._buckets[full]
            bucket = self._buckets[key] = TokenBucket(self._refill_per_s, self._burst, now_s)
        return bucket.take(now_s)

    def _ensure_sender(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="operator-events")

    async def _run(self) -> None:
        """Write what is buffered, one at a time; end windows as they close."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL_S)
            self._wake.clear()
            self.flush_windows()
            while self._buffer:
                key, value, event_type = self._buffer.popleft()
                await self._write(key, value, event_type)
            if not self._windows and not self._buffer:
                self._task = None
                return

    async def _write(self, key: str, value: bytes, event_type: str) -> None:
        try:
            await self._send(key, value)
        except Exception as exc:  # the edge of a background task: drop it, count it
            metrics.OPERATOR_EVENTS_DROPPED.labels(reason="broker_error").inc()
            log.warning("an operator event could not be written: %s", type(exc).__name__)
        else:
            metrics.OPERATOR_EVENTS.labels(type=event_type).inc()

    async def aclose(self) -> None:
        """Stop the sender (what is still buffered is dropped)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def emitter_for(settings: Settings, send: Send) -> Emitter | None:
    """The process's emitter, if an operator sink is configured."""
    if settings.operator_sink is None:
        return None
    return Emitter(
        send,
        buffer=settings.operator_events_buffer,
        burst=settings.operator_events_burst,
        per_hour=settings.operator_events_per_hour,
        exhausted_window_s=settings.operator_events_exhausted_window_s,
    )


def thresholds(fractions: Iterable[float], disable_after: int) -> dict[int, float]:
    """Deliveries dead-lettered in a row at which `consecutive_failures` is emitted, each
    with its fraction: the first count at or past each fraction of the auto-disable
    threshold, below the threshold itself (reaching it is `destination.disabled`)."""
    found: dict[int, float] = {}
    for fraction in sorted(fractions):
        count = max(1, math.ceil(fraction * disable_after - 1e-9))
        if count < disable_after:
            found.setdefault(count, fraction)
    return found


class RunnerEvents:
    """What the runner's outcomes (pipeline/outcomes.py) tell the operator; a no-op
    without an emitter (no operator sink configured)."""

    def __init__(
        self,
        emitter: Emitter | None,
        *,
        disable_after: int = 0,
        fractions: Iterable[float] = (),
        attempt_failed: bool = False,
    ) -> None:
        self._emitter = emitter
        self._disable_after = disable_after
        self._thresholds = thresholds(fractions, disable_after)
        self._attempt_failed = attempt_failed

    @classmethod
    def of(cls, settings: Settings, send: Send) -> RunnerEvents:
        """The runner's, from the settings (called once per worker by the dispatcher)."""
        return cls(
            emitter_for(settings, send),
            disable_after=settings.auto_disable_after_dead_letters,
            fractions=settings.operator_events_failure_fractions,
            attempt_failed=settings.operator_events_attempt_failed,
        )

    @classmethod
    def off(cls) -> RunnerEvents:
        """One that emits nothing."""
        return cls(None)

    def dead_lettered(self, destination: dict[str, Any], reason: str, in_row: int) -> None:
        """A delivery to `destination` was dead-lettered, the `in_row`th in a row counting
        toward auto-disable (0: it does not count)."""
        if self._emitter is None:
            return
        self._emitter.exhausted(destination, reason)
        fraction = self._thresholds.get(in_row)
        if fraction is not None:
            self._emitter.emit(
                CONSECUTIVE_FAILURES,
                destination,
                consecutive_failures=in_row,
                auto_disable_after=self._disable_after,
                fraction=fraction,
            )

    def disabled(self, destination: dict[str, Any], reason: str) -> None:
        """The runner disabled `destination` (its auto-disable was written)."""
        if self._emitter is not None:
            self._emitter.emit(DISABLED, destination, reason=reason)

    def attempt_failed(
        self, delivery: dict[str, Any], destination: dict[str, Any], status: int | None
    ) -> None:
        """An attempt failed (emitted only if `operator_events_attempt_failed` is on); the
        error's text is left out, as it may quote what the receiver said."""
        if self._emitter is None or not self._attempt_failed:
            return
        self._emitter.emit(
            ATTEMPT_FAILED,
            destination,
            delivery_id=delivery.get("id"),
            event_id=delivery["event"].get("id"),
            event_type=delivery["event"].get("type"),
            attempt=delivery.get("attempt"),
            response_status=status,
        )
