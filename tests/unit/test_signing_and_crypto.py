"""Standard Webhooks signatures (checked by the official library) and sealed credentials."""

from __future__ import annotations

import base64
import time

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from pipeline.crypto import CryptoError, Sealer, generate_key
from pipeline.signing import generate_secret, sign

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(
    data=JSON_VALUES,
    key=st.binary(min_size=16, max_size=64),
    message_id=st.from_regex(r"\Aevdl_[A-Za-z0-9_-]{1,40}\Z"),
    timestamp_offset_s=st.integers(min_value=-240, max_value=240),
)
def test_official_library_verifies_our_signature(
    data: object, key: bytes, message_id: str, timestamp_offset_s: int
) -> None:
    """Whatever the body, secret, id and time (within the library's 5-minute tolerance),
    the body we sign is the body the official library verifies."""
    secret = "whsec_" + base64.b64encode(key).decode()
    timestamp = int(time.time()) + timestamp_offset_s
    body = orjson.dumps({"data": data})
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign([secret], message_id, timestamp, body),
    }
    assert Webhook(secret).verify(body, headers) == orjson.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)


def test_rotation_signs_with_both_secrets() -> None:
    old, new = generate_secret(), generate_secret()
    now = int(time.time())
    body = b'{"a": 1}'
    headers = {
        "webhook-id": "m",
        "webhook-timestamp": str(now),
        "webhook-signature": sign([new, old], "m", now, body),
    }
    assert headers["webhook-signature"].count("v1,") == 2
    assert Webhook(old).verify(body, headers) == {"a": 1}
    assert Webhook(new).verify(body, headers) == {"a": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)


def test_url_safe_secret_signs_like_standard() -> None:
    raw = bytes(range(250, 256)) * 4  # encodes with - and _ in URL-safe base64
    standard = "whsec_" + base64.b64encode(raw).decode()
    url_safe = "whsec_" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert sign([standard], "m", 1, b"x") == sign([url_safe], "m", 1, b"x")


def test_sealed_round_trip_and_context_binding() -> None:
    sealer = Sealer(generate_key())
    sealed = sealer.seal({"secret": "whsec_abc"}, "evtd_1")
    assert "whsec_abc" not in sealed
    assert sealer.open(sealed, "evtd_1") == {"secret": "whsec_abc"}
    with pytest.raises(CryptoError):
        sealer.open(sealed, "evtd_2")


def test_key_rotation_keeps_old_records_readable() -> None:
    old_key, new_key = generate_key(), generate_key()
    old = Sealer(old_key).seal({"k": "v"}, "c")
    rotated = Sealer(f"{new_key},{old_key}")
    assert rotated.open(old, "c") == {"k": "v"}
    fresh = rotated.seal({"k": "w"}, "c")
    with pytest.raises(CryptoError):
        Sealer(old_key).open(fresh, "c")
    assert Sealer(new_key).open(fresh, "c") == {"k": "w"}


def test_tampering_and_bad_keys_are_refused() -> None:
    sealer = Sealer(generate_key())
    sealed = sealer.seal({"k": "v"}, "c")
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(CryptoError):
        sealer.open(tampered, "c")
    with pytest.raises(CryptoError):
        Sealer("")
    with pytest.raises(CryptoError):
        Sealer(base64.b64encode(b"short").decode())
