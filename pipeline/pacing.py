"""Per-destination pacing: a token bucket for each destination with a `rate_limit`.

The delivery runner's lanes (pipeline/lanes.py) reserve a token when a delivery has its
lane's slot, and start it on a timer once the token is due: nothing sleeps, and no global
slot is held meanwhile.
State is per worker process (in memory): every first attempt of a destination comes from
one `deliveries` partition and so from one worker, but its retries may be attempted by
the worker that owns the retry tier's partition, so with several workers a destination
can briefly see more than its rate while retries and first attempts overlap.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved up. Never blocks: a reservation
    may take the balance below zero, and whoever reserves next queues behind it."""

    def __init__(self, rate_per_s: float, burst: float, now_s: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._updated_s = now_s

    def reserve(self, now_s: float) -> float:
        """Take one token: the seconds from `now_s` until it may be used (0.0 for now)."""
        self._refill(now_s)
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_per_s

    def take(self, now_s: float) -> bool:
        """Take one token if one is there now; else take nothing (and owe nothing)."""
        self._refill(now_s)
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def full(self, now_s: float) -> bool:
        """True if the bucket has refilled to its burst (forgetting it changes nothing)."""
        self._refill(now_s)
        return self._tokens >= self.burst

    def _refill(self, now_s: float) -> None:
        elapsed_s = max(0.0, now_s - self._updated_s)
        self._tokens = min(self.burst, self._tokens + elapsed_s * self.rate_per_s)
        self._updated_s = max(self._updated_s, now_s)


class Pacer:
    """One bucket per rate-limited destination; the burst is one second's worth (at least 1).

    A destination's bucket is replaced when its rate changes (a PATCH), and dropped when
    it no longer has one.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def delay_s(self, destination_id: str, rate_per_s: float | None) -> float:
        """Reserve an attempt for the destination: how long to wait before making it."""
        if not rate_per_s:
            self._buckets.pop(destination_id, None)
            return 0.0
        now_s = self._clock()
        bucket = self._buckets.get(destination_id)
        if bucket is None or bucket.rate_per_s != rate_per_s:
            bucket = TokenBucket(rate_per_s, max(1.0, float(rate_per_s)), now_s)
            self._buckets[destination_id] = bucket
        return bucket.reserve(now_s)

    def forget(self, destination_id: str) -> None:
        """Drop the destination's bucket (an idle lane: a new one starts full, as it was)."""
        self._buckets.pop(destination_id, None)
