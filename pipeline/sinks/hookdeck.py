"""Hookdeck sink: the event envelope POSTed to a Hookdeck source, signed with its token.

The reference gives the `token` (alias `api_key`) and no signing scheme, so Herald follows
the one Hookdeck's own Outpost uses for managed sources: the token is base64 of
`<source id>:<key>`; the body goes to `{hookdeck_base_url}/{source id}` with
`X-Hookdeck-Signature: v0=<base64 HMAC-SHA256 of the body, keyed by the whole token>`.
Herald adds `webhook-id` (the delivery id, the same on every retry, for deduplication) and
`webhook-timestamp` as Standard Webhooks name them; there is no `webhook-signature`, since
a Hookdeck destination has no `whsec_` secret. The token itself never goes on the wire.

Outcomes: 2xx is success; 400, 401, 403, 404, 410, 413 and 422 are permanent (a bad
token, an unknown source, a body Hookdeck will never take); every other status, a
timeout and a network error are retryable. A refused address is permanent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from pipeline.outbound import AddressRefused
from pipeline.settings import Settings
from pipeline.sinks.base import (
    Config,
    Credentials,
    DeliveryResult,
    PermanentError,
    Publisher,
    RetryableError,
    Target,
)
from pipeline.sinks.fields import FieldErrors, config_object, string, unknown_fields
from pipeline.sinks.http_common import SessionPool, read_head, retry_after_s, transport_errors

RESPONSE_BODY_BYTES = 1024
USER_AGENT = "Herald-Hookdeck/0.1"
SOURCE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 410, 413, 422})
EXPECTED_FORM = "must be a Hookdeck source token: base64 of '<source id>:<key>'"


def source_id(token: str) -> str | None:
    """The source id a Hookdeck token names; None if it is not such a token."""
    if not token.isascii():  # b64decode raises a bare ValueError for that
        return None
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    identifier, colon, key = decoded.partition(":")
    if not colon or not key or not SOURCE_ID.match(identifier):
        return None
    return identifier


def signature(token: str, body: bytes) -> str:
    """The X-Hookdeck-Signature value for `body`."""
    digest = hmac.new(token.encode(), body, hashlib.sha256).digest()
    return "v0=" + base64.b64encode(digest).decode()


class HookdeckPublisher:
    """Posts to one Hookdeck source through the sink's shared connection pool."""

    def __init__(self, pool: SessionPool, target: Target, settings: Settings) -> None:
        self._session = pool.session(settings)
        self._token: str = target.credentials.get("token") or ""
        identifier = source_id(self._token)
        if identifier is None:  # validated on create; a stored record is never like this
            raise PermanentError(f"hookdeck.token {EXPECTED_FORM}")
        self._url = URL(f"{settings.hookdeck_base_url.rstrip('/')}/{identifier}")
        self._refusal = pool.refusal(settings, self._url)  # once: the URL never changes
        self._timeout = aiohttp.ClientTimeout(total=settings.delivery_timeout_s)

    async def publish(self, delivery_id: str, event: dict[str, Any], body: bytes) -> DeliveryResult:
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": delivery_id,
            "webhook-timestamp": str(int(time.time())),
            "x-hookdeck-signature": signature(self._token, body),
        }
        with transport_errors("Hookdeck"):
            if self._refusal is not None:
                raise AddressRefused(self._refusal)
            async with self._session.post(
                self._url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                text = await read_head(resp, RESPONSE_BODY_BYTES)
                return _outcome(resp.status, text, resp.headers)

    async def close(self) -> None:
        """Nothing per destination: connections belong to the sink's pool."""


def _outcome(status: int, text: str, headers: CIMultiDictProxy[str]) -> DeliveryResult:
    """A 2xx is a result; anything else raises, permanent or retryable by status."""
    if 200 <= status < 300:
        return DeliveryResult(response_status=status, response_body=text)
    if status in PERMANENT_STATUSES:
        raise PermanentError(
            f"HTTP {status} from Hookdeck", response_status=status, response_body=text
        )
    raise RetryableError(
        f"HTTP {status} from Hookdeck",
        retry_after_s=retry_after_s(headers.get("Retry-After")),
        response_status=status,
        response_body=text,
    )


class HookdeckSink:
    """Owns one connection pool for every Hookdeck destination of the process."""

    type = "hookdeck"

    def __init__(self) -> None:
        self._pool = SessionPool()

    def validate(
        self, raw: Any, errors: FieldErrors, path: str, settings: Settings
    ) -> tuple[Config, Credentials]:
        """`token` (alias `api_key`, write-only): a Hookdeck source token. The public config
        is empty, as the reference's response shows it."""
        raw = config_object(errors, raw, path, self.type)
        unknown_fields(errors, raw, path, ("token", "api_key"))
        token = string(errors, raw, path, "token", aliases=("api_key",), max_length=1024)
        if token is None:
            return {}, {}
        if source_id(token) is None:
            errors.add(f"{path}.token", f"{EXPECTED_FORM}.")
            return {}, {}
        return {}, {"token": token}

    async def open(self, target: Target, settings: Settings) -> Publisher:
        """A publisher on the shared pool (no network I/O here)."""
        return HookdeckPublisher(self._pool, target, settings)

    async def aclose(self) -> None:
        """Close the pool."""
        await self._pool.aclose()


SINK = HookdeckSink()
