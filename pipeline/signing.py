"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`."""

from __future__ import annotations

import base64
import hashlib
import hmac
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
    signed = f"{message_id}.{timestamp_s}.".encode() + body
    parts = []
    for secret in secrets:
        digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
        parts.append("v1," + base64.b64encode(digest).decode())
    return " ".join(parts)


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
    one whose overlap has not ended. Asked at each send, so an overlap ends on time even in
    a publisher opened long before."""
    current = [str(credentials["secret"])] if credentials.get("secret") else []
    return current + [s for s, until_s in previous_secrets(credentials) if until_s > now_s]


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
