"""SessionPool.refusal (pipeline/sinks/http_common.py): what a webhook or Hookdeck publisher
checks once for its URL, since aiohttp hands IP-literal hosts to no resolver."""

from __future__ import annotations

import pytest
from yarl import URL

from pipeline.settings import Settings
from pipeline.sinks.http_common import SessionPool


@pytest.mark.parametrize(
    ("url", "https_only", "refused"),
    [
        ("http://127.0.0.1:9/h", False, False),  # allow-listed below
        ("http://169.254.169.254/latest", False, True),  # link-local: never
        ("http://10.0.0.1/h", False, True),
        ("http://[::1]/h", False, True),
        ("https://example.com/h", False, False),  # a name: the resolver checks it
        ("http://example.com/h", True, True),  # plain http when https-only
        ("https://8.8.8.8/h", True, False),
    ],
)
async def test_refused_urls(url: str, https_only: bool, refused: bool) -> None:
    settings = Settings(outbound_allowlist=["127.0.0.1/32"], https_only=https_only)
    pool = SessionPool()
    try:
        assert (pool.refusal(settings, URL(url)) is not None) is refused
    finally:
        await pool.aclose()


async def test_the_policy_is_the_open_sessions_and_a_reopened_one_takes_new_settings() -> None:
    pool, url = SessionPool(), URL("http://127.0.0.1:9/h")
    try:
        assert pool.refusal(Settings(outbound_allowlist=["127.0.0.1/32"]), url) is None
        await pool.aclose()
        assert pool.refusal(Settings(), url) is not None  # loopback: refused by default
    finally:
        await pool.aclose()
