"""U+0000 never reaches PostgreSQL: refused at publish, replaced in the index (fuzz finding)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from api import validation
from api.errors import RequestValidationError
from pipeline.indexer import Batch
from pipeline.topics import ATTEMPTS, EVENTS


@pytest.mark.parametrize(
    "data", [{"a": "x\x00"}, {"k\x00": 1}, {"a": [{"b": ["\x00"]}]}], ids=["value", "key", "deep"]
)
def test_publish_refuses_nul_in_data(data: dict[str, Any]) -> None:
    with pytest.raises(RequestValidationError) as caught:
        validation.publish_event({"type": "a.b", "data": data})
    assert list(caught.value.errors) == ["data"]


def test_publish_accepts_an_escaped_backslash_u0000_text() -> None:
    assert validation.publish_event({"type": "a.b", "data": {"a": "\\u0000"}})["data"]


def test_index_rows_hold_no_nul() -> None:
    batch = Batch()
    event = {"tenant": "t", "id": "evt_1", "type": "a.b", "created_at": "2026-01-01T00:00:00Z"}
    batch.add(EVENTS, orjson.dumps({**event, "data": {"k\x00": ["v\x00", "\\u0000"]}}))
    attempt = {
        "id": "evat_1",
        "delivery_id": "evdl_1",
        "tenant": "t",
        "event_id": "evt_1",
        "event_type": "a.b",
        "destination_id": "evtd_1",
        "attempt": 0,
        "outcome": "failed",
        "error": "bad\x00",
        "response_body": "\x00body",
        "created_at": "2026-01-01T00:00:00Z",
    }
    batch.add(ATTEMPTS, orjson.dumps(attempt))
    [event_row] = batch.events
    assert orjson.loads(event_row[3]) == {"k\ufffd": ["v\ufffd", "\\u0000"]}
    [attempt_row] = batch.attempts
    assert attempt_row[9:11] == ("bad\ufffd", "\ufffdbody")
