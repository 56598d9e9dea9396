"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`."""

from __future__ import annotations

import base64
import hmac
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.sinks.fields import base64_bytes

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
ROTATION_OVERLAP_S = 24 * 3600
MAX_PREVIOUS_SECRETS = 5


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
    return _signature((secret_bytes(secret) for secret in secrets), message_id, timestamp_s, body)


def _signature(keys: Iterable[bytes], message_id: str, timestamp_s: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp_s}.".encode() + body
    parts = []
    for key in keys:
        digest = hmac.digest(key, signed, "sha256")  # one call into OpenSSL
        parts.append("v1," + base64.b64encode(digest).decode())
    return " ".join(parts)


class SigningKeys:
    """A destination's signing secrets, decoded once. The webhook publisher (opened once
    per version of the destination's record, and kept in the bounded PublisherCache) makes
    one when it opens and signs every delivery with it; which keys sign is still decided
    at each send, so an overlap ends on time in a publisher opened long before."""

    def __init__(self, credentials: Mapping[str, Any]) -> None:
        # (HMAC key, signs until), the current secret first (it never stops).
        self._keys = [(secret_bytes(s), until_s) for s, until_s in _timed_secrets(credentials)]

    def sign(self, message_id: str, timestamp_s: int, body: bytes, now_s: float) -> str:
        """The webhook-signature header value for a message sent at `now_s`."""
        keys = (key for key, until_s in self._keys if until_s > now_s)
        return _signature(keys, message_id, timestamp_s, body)


def previous_secrets(credentials: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The (secret, until_s) pairs of earlier secrets that sign alongside the current one.

    Records sealed before the list existed hold one `previous_secret`/`previous_until`.
    """
    pairs = [(str(s), float(u)) for s, u in credentials.get("previous_secrets") or ()]
    legacy = credentials.get("previous_secret")
    if legacy:
        pairs.append((str(legacy), float(credentials.get("previous_until") or 0)))
    return pairs


def signing_secrets(credentials: Mapping[str, Any], now_s: float) -> list[str]:
    """The secrets that sign a message sent at `now_s`: the current one, then every earlier
    one whose overlap has not ended."""
    return [s for s, until_s in _timed_secrets(credentials) if until_s > now_s]


def _timed_secrets(credentials: Mapping[str, Any]) -> list[tuple[str, float]]:
    """(secret, signs until) of every secret, the current one first (until forever)."""
    current = [(str(credentials["secret"]), math.inf)] if credentials.get("secret") else []
    return current + previous_secrets(credentials)


def rotated(
    credentials: Mapping[str, Any],
    new_secret: str,
    now_s: float,
    overlap_s: float = ROTATION_OVERLAP_S,
) -> dict[str, Any]:
    """The credentials after a rotation to `new_secret` at `now_s`.

    The replaced secret signs alongside until `now_s + overlap_s`, and so does every earlier
    one until its own end: rotating twice in a day keeps all three. At most
    MAX_PREVIOUS_SECRETS are kept (the ones ending last); expired ones are dropped.
    """
    pairs = [(s, u) for s, u in previous_secrets(credentials) if u > now_s]
    if credentials.get("secret"):
        pairs.append((str(credentials["secret"]), now_s + overlap_s))
    pairs.sort(key=lambda pair: pair[1], reverse=True)
    kept = {k: v for k, v in credentials.items() if k not in ("previous_secret", "previous_until")}
    return {
        **kept,
        "secret": new_secret,
        "previous_secrets": [[s, u] for s, u in pairs[:MAX_PREVIOUS_SECRETS]],
    }
