"""Per-API-key request rate limiting: one token bucket per key, in each API process.

Off unless configured (the contract): HERALD_API_RATE_LIMIT_PER_S sets the rate for every
key, and a key in HERALD_API_KEYS may carry its own `rate_limit_per_s` and
`rate_limit_burst`. A request costs one token whatever it carries (a batch publish of 1,000
events is one request). Only authenticated requests reach the limiter, so the buckets are
bounded by the number of configured keys.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.settings import Settings


@dataclass
class TokenBucket:
    """`burst` tokens at most, refilled at `rate_per_s`; a request takes one."""

    rate_per_s: float
    burst: int
    tokens: float
    updated_s: float

    def take(self, now_s: float) -> float:
        """0 if a token was taken; else the seconds until one will be there (nothing taken)."""
        elapsed_s = max(0.0, now_s - self.updated_s)
        self.tokens = min(float(self.burst), self.tokens + elapsed_s * self.rate_per_s)
        self.updated_s = now_s
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s


@dataclass(frozen=True)
class Limit:
    """A key's rate (requests per second; 0 means unlimited) and burst."""

    rate_per_s: float
    burst: int


class RateLimiter:
    """The buckets of every key that called, by the key's SHA-256."""

    def __init__(self, settings: Settings, clock_s: Callable[[], float] = time.monotonic) -> None:
        self._default = Limit(settings.api_rate_limit_per_s, settings.api_rate_limit_burst)
        self._by_key = {
            k.key_sha256: Limit(
                self._default.rate_per_s if k.rate_limit_per_s is None else k.rate_limit_per_s,
                self._default.burst if k.rate_limit_burst is None else k.rate_limit_burst,
            )
            for k in settings.api_keys
        }
        self._buckets: dict[str, TokenBucket] = {}
        self._clock_s = clock_s

    def retry_after_s(self, key_sha256: str) -> int | None:
        """None if the key may make this request now; else whole seconds to wait (≥ 1)."""
        limit = self._by_key.get(key_sha256, self._default)
        if limit.rate_per_s <= 0:
            return None
        now_s = self._clock_s()
        bucket = self._buckets.get(key_sha256)
        if bucket is None:
            bucket = self._buckets[key_sha256] = TokenBucket(
                limit.rate_per_s, limit.burst, float(limit.burst), now_s
            )
        wait_s = bucket.take(now_s)
        return max(1, math.ceil(wait_s)) if wait_s > 0 else None
