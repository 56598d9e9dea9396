"""Encryption of destination credentials at rest: AES-256-GCM, keys from settings.

A sealed value is `v1.<key id>.<base64url(nonce + ciphertext)>`; the key id is the first
8 hex digits of the key's SHA-256, so any configured key can open what it sealed and the
first key seals new values (rotation: put the new key first, keep the old ones after it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12


class CryptoError(Exception):
    """A sealed value could not be opened (unknown key, tampered, or malformed)."""


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def generate_key() -> str:
    """A new random key, base64 encoded, for HERALD_ENCRYPTION_KEYS."""
    return base64.b64encode(os.urandom(32)).decode()


class Sealer:
    """Seals and opens small JSON-able mappings, bound to a context (the destination id)."""

    def __init__(self, encoded_keys: str) -> None:
        keys: list[bytes] = []
        for part in (p.strip() for p in encoded_keys.split(",")):
            if not part:
                continue
            try:
                key = base64.b64decode(part, validate=True)
            except binascii.Error as exc:
                raise CryptoError("an encryption key is not valid base64") from exc
            if len(key) != 32:
                raise CryptoError("an encryption key must be 32 bytes (base64 of 32 bytes)")
            keys.append(key)
        if not keys:
            raise CryptoError("no encryption key configured (HERALD_ENCRYPTION_KEYS)")
        self._current = keys[0]
        self._by_id = {_key_id(k): AESGCM(k) for k in keys}

    def seal(self, values: Mapping[str, object], context: str) -> str:
        """Encrypt `values`; `context` must be given again to open it."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._by_id[_key_id(self._current)].encrypt(
            nonce, orjson.dumps(values), context.encode()
        )
        blob = base64.urlsafe_b64encode(nonce + sealed).decode()
        return f"v1.{_key_id(self._current)}.{blob}"

    def open(self, sealed: str, context: str) -> dict[str, object]:
        """Decrypt a value from `seal`; raises CryptoError without revealing anything."""
        try:
            version, key_id, blob = sealed.split(".", 2)
            aead = self._by_id[key_id]
            raw = base64.urlsafe_b64decode(blob)
            plain = aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode())
        except (ValueError, KeyError, InvalidTag, binascii.Error) as exc:
            raise CryptoError("cannot open sealed credentials") from exc
        if version != "v1":
            raise CryptoError("unknown sealed format")
        value = orjson.loads(plain)
        if not isinstance(value, dict):
            raise CryptoError("sealed credentials are not a mapping")
        return value
