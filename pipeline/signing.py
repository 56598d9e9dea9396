"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


def generate_secret() -> str:
    """A new signing secret: whsec_ + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(24)).decode()


def secret_bytes(secret: str) -> bytes:
    """The HMAC key inside a whsec_ secret (standard or URL-safe base64)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    padded = encoded + "=" * (-len(encoded) % 4)
    if "-" in encoded or "_" in encoded:
        return base64.urlsafe_b64decode(padded)
    return base64.b64decode(padded, validate=True)


def sign(secrets: Iterable[str], message_id: str, timestamp_s: int, body: bytes) -> str:
    """The webhook-signature header value: one `v1,…` per secret, space separated."""
    signed = f"{message_id}.{timestamp_s}.".encode() + body
    parts = []
    for secret in secrets:
        digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
        parts.append("v1," + base64.b64encode(digest).decode())
    return " ".join(parts)
