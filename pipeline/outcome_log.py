"""The delivery runner's log of outcomes: one INFO summary line per interval, not per delivery.

The recorder (pipeline/attempts.py) counts each outcome here once it is recorded, and
logs the delivery's own line at DEBUG. The first outcome after a quiet spell starts a
timer; when it fires, one line says how many attempts succeeded (delivered) and failed,
how many deliveries went to a retry tier (after a failure, a turn skipped by an open
circuit, or put off) or to the DLQ, and how many were canceled since; the next outcome
starts the timer again. The line carries the counts as a JSON object too (`counts`,
keyed by OUTCOMES). So a busy worker writes one line per interval, an idle one none.
The metrics (pipeline/metrics.py) count every outcome as before.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)

SUMMARY_INTERVAL_S = 10.0
OUTCOMES = ("delivered", "failed", "retried", "dead_lettered", "canceled")
SUMMARY_PREFIX = "delivery summary"


class OutcomeTally:
    """Counts of one interval's outcomes, logged at INFO when it ends."""

    def __init__(self, interval_s: float = SUMMARY_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._counts = dict.fromkeys(OUTCOMES, 0)
        self._timer: asyncio.TimerHandle | None = None

    @property
    def idle(self) -> bool:
        """No interval is running: nothing is counted and no summary is due."""
        return self._timer is None

    def count(self, outcome: str) -> None:
        """One delivery's `outcome` (one of OUTCOMES) was recorded."""
        self._counts[outcome] += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval_s, self.flush)

    def flush(self) -> None:
        """Log the interval's counts (if any) and start a new interval."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        counts, self._counts = self._counts, dict.fromkeys(OUTCOMES, 0)
        if not any(counts.values()):
            return
        log.info(
            "%s: %d delivered, %d failed, %d retried, %d dead-lettered, %d canceled in %.0f s",
            SUMMARY_PREFIX,
            counts["delivered"],
            counts["failed"],
            counts["retried"],
            counts["dead_lettered"],
            counts["canceled"],
            self._interval_s,
            extra={"counts": counts},
        )
