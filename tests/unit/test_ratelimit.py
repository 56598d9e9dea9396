"""Per-key rate limiting: the token bucket, per-key settings, and the 429 body."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from api.auth import hash_key
from api.errors import too_many_requests
from api.ratelimit import RateLimiter, TokenBucket
from pipeline.settings import ApiKey, Settings
from tests.unit.test_openapi import assert_valid


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_burst_then_one_request_per_interval() -> None:
    clock = Clock()
    limiter = RateLimiter(Settings(api_rate_limit_per_s=2, api_rate_limit_burst=3), clock)
    assert [limiter.retry_after_s("k") for _ in range(3)] == [None, None, None]
    assert limiter.retry_after_s("k") == 1  # 0.5 s to the next token, rounded up
    clock.now_s += 0.5
    assert limiter.retry_after_s("k") is None
    assert limiter.retry_after_s("k") == 1
    clock.now_s += 60  # refills to the burst, never beyond it
    assert [limiter.retry_after_s("k") for _ in range(4)] == [None, None, None, 1]


def test_keys_have_their_own_buckets_and_limits() -> None:
    clock = Clock()
    slow = ApiKey(key_sha256=hash_key("slow"), tenant="t", rate_limit_per_s=0.1, rate_limit_burst=1)
    free = ApiKey(key_sha256=hash_key("free"), tenant="t", rate_limit_per_s=0)
    limiter = RateLimiter(
        Settings(api_keys=[slow, free], api_rate_limit_per_s=1, api_rate_limit_burst=1), clock
    )
    assert limiter.retry_after_s(slow.key_sha256) is None
    assert limiter.retry_after_s(slow.key_sha256) == 10
    assert all(limiter.retry_after_s(free.key_sha256) is None for _ in range(1000))
    assert limiter.retry_after_s("default") is None  # another key is not held back
    assert limiter.retry_after_s("default") == 1


def test_off_by_default() -> None:
    limiter = RateLimiter(Settings())
    assert all(limiter.retry_after_s("k") is None for _ in range(10_000))


@given(
    rate_per_s=st.floats(0.01, 1000),
    burst=st.integers(1, 500),
    gaps_s=st.lists(st.floats(0, 5), min_size=1, max_size=200),
)
def test_never_more_than_burst_plus_rate_times_time(
    rate_per_s: float, burst: int, gaps_s: list[float]
) -> None:
    bucket = TokenBucket(rate_per_s, burst, float(burst), 0.0)
    now_s, allowed = 0.0, 0
    for gap_s in gaps_s:
        now_s += gap_s
        wait_s = bucket.take(now_s)
        assert wait_s >= 0
        if wait_s == 0:
            allowed += 1
        else:
            assert wait_s <= 1 / rate_per_s + 1e-9
    assert allowed <= burst + now_s * rate_per_s + 1e-6


def test_429_is_the_contract_error_response_with_retry_after() -> None:
    response = too_many_requests(3).response("req_1")
    assert response.status == 429
    assert response.headers["Retry-After"] == "3"
    assert isinstance(response.body, bytes)
    body = orjson.loads(response.body)
    assert_valid("ErrorResponse", body)
    assert (body["errors"][0]["code"], body["request_id"]) == ("rate_limited", "req_1")
