"""Standard Webhooks signatures (checked by the official library) and sealed credentials."""

from __future__ import annotations

import base64
import time
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from pipeline.crypto import CryptoError, Sealer, generate_key
from pipeline.settings import Settings
from pipeline.signing import (
    MAX_PREVIOUS_SECRETS,
    SigningKeys,
    generate_secret,
    rotated,
    sign,
    signing_secrets,
)
from pipeline.sinks import webhook
from pipeline.sinks.base import Target

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


# -- rotation: (secret, until) pairs, filtered when signing (issue 12, C13) --------------------

T0 = 1_800_000_000.0
DAY = 24 * 3600


def test_rotating_twice_in_a_day_keeps_every_secret_for_its_own_24_hours() -> None:
    first, second, third = generate_secret(), generate_secret(), generate_secret()
    once = rotated({"secret": first}, second, T0)
    twice = rotated(once, third, T0 + 3600)
    assert signing_secrets(twice, T0 + 7200) == [third, second, first]
    assert signing_secrets(twice, T0 + DAY + 1) == [third, second]
    assert signing_secrets(twice, T0 + 3600 + DAY + 1) == [third]
    assert "previous_secret" not in twice


def test_keys_decoded_once_sign_like_the_secrets_and_drop_an_overlap_on_time() -> None:
    first, second, third = generate_secret(), generate_secret(), generate_secret()
    twice = rotated(rotated({"secret": first}, second, T0), third, T0 + 3600)
    keys = SigningKeys(twice)  # made once, when the publisher opens
    for now_s in (T0 + 7200, T0 + DAY + 1, T0 + 3600 + DAY + 1):
        expected = sign(signing_secrets(twice, now_s), "evdl_1", int(now_s), b'{"a":1}')
        assert keys.sign("evdl_1", int(now_s), b'{"a":1}', now_s) == expected
    assert keys.sign("m", 1, b"x", T0 + 3600 + DAY + 1).count("v1,") == 1
    assert SigningKeys({}).sign("m", 1, b"x", T0) == ""


def test_a_record_from_before_the_list_still_signs_with_its_previous_secret() -> None:
    old, new, newer = generate_secret(), generate_secret(), generate_secret()
    legacy = {"secret": new, "previous_secret": old, "previous_until": T0 + 10}
    assert signing_secrets(legacy, T0) == [new, old]
    assert signing_secrets(legacy, T0 + 11) == [new]
    assert signing_secrets(rotated(legacy, newer, T0), T0 + 1) == [newer, new, old]


def test_previous_secrets_are_bounded_and_expired_ones_dropped() -> None:
    credentials: dict[str, Any] = {"secret": generate_secret()}
    for i in range(3 * MAX_PREVIOUS_SECRETS):
        credentials = rotated(credentials, generate_secret(), T0 + i)
    assert len(credentials["previous_secrets"]) == MAX_PREVIOUS_SECRETS
    later = rotated(credentials, generate_secret(), T0 + 2 * DAY)
    assert len(later["previous_secrets"]) == 1  # only the one just replaced


class _Response:
    status = 200
    headers: dict[str, str] = {}  # noqa: RUF012 - read only
    content = None

    async def __aenter__(self) -> _Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Session:
    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []

    def post(self, url: str, **kwargs: Any) -> _Response:
        self.sent.append(kwargs["headers"])
        return _Response()


async def test_a_cached_publisher_stops_signing_with_a_secret_once_its_overlap_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, new = generate_secret(), generate_secret()
    clock = [T0]
    monkeypatch.setattr(webhook, "time", SimpleNamespace(time=lambda: clock[0]))

    async def no_body(response: Any, limit: int) -> str:
        return ""

    monkeypatch.setattr(webhook, "read_head", no_body)
    credentials = rotated({"secret": old}, new, T0 - DAY + 60)  # old ends in 60 s
    session = _Session()
    target = Target("evtd_1", {"url": "https://example.com/h"}, credentials)
    pool = SimpleNamespace(session=lambda settings: session, refusal=lambda settings, url: None)
    publisher = webhook.WebhookPublisher(pool, target, Settings(), 5.0)  # type: ignore[arg-type]
    await publisher.publish("evdl_1", {}, b"{}")
    clock[0] = T0 + 61
    await publisher.publish("evdl_2", {}, b"{}")
    before, after = (h["webhook-signature"] for h in session.sent)
    assert before.count("v1,") == 2
    assert after == sign([new], "evdl_2", int(T0 + 61), b"{}")
