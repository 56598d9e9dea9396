"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable

from pipeline.sinks.fields import base64_bytes

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


def generate_secret() -> str:
    """A new signing secret: whsec_ + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(24)).decode()


def secret_bytes(secret: str) -> bytes:
    """The HMAC key inside a whsec_ secret (standard or URL-safe base64)."""
    key = base64_bytes(secret.removeprefix(SECRET_PREFIX))
    if key is None:
        raise ValueError("not a whsec_ secret")
    return key


def valid_secret(secret: object) -> bool:
    """True for whsec_ + base64 (standard or URL-safe) of 16 to 64 bytes."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        return False
    key = base64_bytes(secret.removeprefix(SECRET_PREFIX))
    return key is not None and 16 <= len(key) <= 64


def sign(secrets: Iterable[str], message_id: str, timestamp_s: int, body: bytes) -> str:
    """The webhook-signature header value: one `v1,…` per secret, space separated."""
    signed = f"{message_id}.{timestamp_s}.".encode() + body
    parts = []
    for secret in secrets:
        digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
        parts.append("v1," + base64.b64encode(digest).decode())
    return " ".join(parts)
