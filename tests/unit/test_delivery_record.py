"""The delivery record's wire format (pipeline/delivery_record.py): the body travels as
bytes, the head decodes alone, and records in the JSON format written before still decode."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import delivery_record
from pipeline.delivery_record import BODY

ENVELOPE = {
    "id": "evt_1",
    "object": "event",
    "type": "a.b",
    "data": {"x": [1, "é"]},
    "created_at": "t",
}
HEAD = {
    "id": "evdl_1",
    "event": {"id": "evt_1", "type": "a.b", "created_at": "t"},
    "tenant": "t",
    "destination_id": "evtd_1",
    "destination_generation": "g",
    "attempt": 0,
    "due_at": None,
    "routed_at": "r",
}


def test_the_body_comes_back_byte_for_byte_and_the_head_alone() -> None:
    body = orjson.dumps(ENVELOPE)
    value = delivery_record.frame(HEAD, body)
    assert delivery_record.decode(value) == {**HEAD, BODY: body}
    assert delivery_record.head(value) == HEAD


def test_a_retry_reframes_the_changed_head_with_the_same_body() -> None:
    decoded = delivery_record.decode(delivery_record.frame(HEAD, b"{}"))
    again = delivery_record.decode(delivery_record.encode({**decoded, "attempt": 2}))
    assert again == {**HEAD, "attempt": 2, BODY: b"{}"}


def test_a_json_record_written_before_the_format_decodes_to_the_same_delivery() -> None:
    legacy = orjson.dumps({**HEAD, "event": ENVELOPE})
    assert delivery_record.decode(legacy) == {**HEAD, BODY: orjson.dumps(ENVELOPE)}
    assert delivery_record.head(legacy)["event"] == ENVELOPE


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"[]",
        b'{"id": "evdl_1"}',
        delivery_record.VERSION + (1000).to_bytes(4, "big") + b"{}",
        delivery_record.VERSION + (2).to_bytes(4, "big") + b"[]",
    ],
)
def test_a_malformed_record_raises_a_value_error(value: bytes) -> None:
    with pytest.raises(ValueError):
        delivery_record.decode(value)


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_a_value_error(value: bytes) -> None:
    with contextlib.suppress(ValueError):
        delivery_record.decode(value)
