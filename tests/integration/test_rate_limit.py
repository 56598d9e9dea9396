"""Per-key rate limiting against the running API: 429 with Retry-After, per key, after auth.

The stack gives one dedicated key (RATE_LIMITED_KEY) a burst of 3 and 0.5 requests/s;
every other key is unlimited, so the rest of the suite is never slowed down.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from tests.integration.api_client import Api
from tests.integration.conftest import RATE_LIMIT, RATE_LIMITED_KEY, Stack
from tests.support import eventually


async def test_over_the_limit_is_429_with_retry_after(api: Api, stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {RATE_LIMITED_KEY}"}
    async with aiohttp.ClientSession(base_url=stack.api_url, headers=headers) as session:

        async def call(method: str, path: str, body: Any = None) -> aiohttp.ClientResponse:
            async with session.request(method, path, json=body) as response:
                await response.read()
                return response

        # A batch of many events is one request: it takes one token of the burst of 3.
        batch = {"events": [{"type": "limit.hit", "data": {"n": n}} for n in range(50)]}
        started = time.monotonic()
        assert (await call("POST", "/v2/events/batch", batch)).status == 202
        # Calls until the first refusal: the burst, plus whatever refilled meanwhile (on a
        # loaded machine the calls may take seconds; the bound is the behaviour).
        allowed = 1
        while True:
            async with session.get("/v2/event-destinations") as limited:
                body = await limited.json()
                if limited.status != 200:
                    break
            allowed += 1
            assert allowed <= 20, "never limited"
        elapsed_s = time.monotonic() - started
        burst, rate = RATE_LIMIT["rate_limit_burst"], RATE_LIMIT["rate_limit_per_s"]
        assert burst <= allowed <= burst + rate * elapsed_s
        assert limited.status == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 1 / rate
        assert body["request_id"] == limited.headers["Request-Id"]
        assert body["errors"][0]["code"] == "rate_limited"
        assert body["errors"][0]["type"] == "rate_limit_error"

        # Unauthenticated requests are a 401, never counted against (or by) a key.
        async with session.get(
            "/v2/event-destinations", headers={"Authorization": "Bearer sk_unknown"}
        ) as unknown:
            assert unknown.status == 401
        # Another key is not held back, nor are the public paths.
        assert (await api.call("GET", "/v2/event-destinations"))[0] == 200
        assert (await call("GET", "/healthz")).status == 200

        # Refused requests take no token: the bucket refills and the key gets through again.
        async def through() -> bool:
            return (await call("GET", "/v2/event-destinations")).status == 200

        await eventually(through, timeout_s=30, interval_s=0.5, what="a refilled token")
