"""Webhook sink: a signed HTTP POST of the event envelope (Standard Webhooks)."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
from yarl import URL

from pipeline.outbound import AddressRefused
from pipeline.settings import Settings
from pipeline.signing import SECRET_PREFIX, SigningKeys, valid_secret
from pipeline.sinks.base import (
    Config,
    Credentials,
    DeliveryResult,
    PermanentError,
    Publisher,
    RetryableError,
    Target,
)
from pipeline.sinks.fields import FieldErrors, config_object, http_url, unknown_fields
from pipeline.sinks.headers import custom_headers
from pipeline.sinks.http_common import SessionPool, read_head, retry_after_s, transport_errors

RESPONSE_BODY_BYTES = 1024
USER_AGENT = "Herald-Webhooks/0.1"


class WebhookPublisher:
    """Posts to one webhook URL through the sink's shared connection pool."""

    def __init__(
        self, pool: SessionPool, target: Target, settings: Settings, timeout_s: float
    ) -> None:
        self._session = pool.session(settings)
        # Parsed and checked against the outbound policy once, not per request.
        self._url = URL(target.config["url"])
        self._refusal = pool.refusal(settings, self._url)
        self._headers = {
            **_header_values(target),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        self._keys = SigningKeys(target.credentials)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def publish(self, delivery_id: str, event: dict[str, Any], body: bytes) -> DeliveryResult:
        now_s = time.time()
        timestamp_s = int(now_s)
        headers = {
            **self._headers,
            "webhook-id": delivery_id,
            "webhook-timestamp": str(timestamp_s),
            "webhook-signature": self._keys.sign(delivery_id, timestamp_s, body, now_s),
        }
        with transport_errors("the receiver"):
            if self._refusal is not None:
                raise AddressRefused(self._refusal)
            async with self._session.post(
                self._url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                text = await read_head(resp, RESPONSE_BODY_BYTES)
                return _outcome(resp.status, text, resp.headers.get("Retry-After"))

    async def close(self) -> None:
        """Nothing per destination: connections belong to the sink's pool."""


def _header_values(target: Target) -> dict[str, str]:
    """The custom headers to send: sealed with the credentials; records written before they
    were sealed kept them in the public config."""
    sealed = target.credentials.get("custom_headers")
    if isinstance(sealed, dict):
        return dict(sealed)
    legacy = target.config.get("custom_headers")
    return dict(legacy) if isinstance(legacy, dict) else {}


def _outcome(status: int, text: str, retry_after: str | None) -> DeliveryResult:
    """A 2xx is a result; 410 is permanent (and disables the destination); any other status,
    redirects included (never followed), is retryable."""
    if 200 <= status < 300:
        return DeliveryResult(response_status=status, response_body=text)
    if status == 410:
        raise PermanentError(
            "410 Gone: the receiver asked to stop", response_status=410, response_body=text
        )
    note = " (redirects are not followed)" if 300 <= status < 400 else ""
    raise RetryableError(
        f"HTTP {status}{note}",
        retry_after_s=retry_after_s(retry_after),
        response_status=status,
        response_body=text,
    )


class WebhookSink:
    """Owns one connection pool for every webhook destination of the process."""

    type = "webhook"

    def __init__(self) -> None:
        self._pool = SessionPool()

    def validate(
        self, raw: Any, errors: FieldErrors, path: str, settings: Settings
    ) -> tuple[Config, Credentials]:
        """`url` (absolute http/https), optional `secret` (whsec_…), `custom_headers`.

        Header values often carry an Authorization: they are credentials (sealed, never
        shown); the public config lists the header names only.
        """
        raw = config_object(errors, raw, path, self.type)
        unknown_fields(errors, raw, path, ("url", "secret", "custom_headers"))
        config: Config = {"url": http_url(errors, raw.get("url"), f"{path}.url")}
        credentials: Credentials = {}
        headers = custom_headers(errors, raw.get("custom_headers"), f"{path}.custom_headers")
        if headers is not None:
            config["custom_headers"] = list(headers)
            credentials["custom_headers"] = headers
        secret = raw.get("secret")
        if secret is not None:
            if valid_secret(secret):
                credentials["secret"] = secret
            else:
                errors.add(
                    f"{path}.secret",
                    f"must be '{SECRET_PREFIX}' followed by base64 of 16 to 64 bytes.",
                )
        return config, credentials

    async def open(self, target: Target, settings: Settings) -> Publisher:
        return WebhookPublisher(self._pool, target, settings, settings.delivery_timeout_s)

    async def aclose(self) -> None:
        await self._pool.aclose()


SINK = WebhookSink()
