"""A recovery's window (every bad one a 400 naming its field), what a recovery looks like
against the spec, and the record a requeue writes (a new chain: attempt 0, no dead-letter
marks, the circuit applies unless the user asked for this one attempt now)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api import requeue
from api.dead_letters import line
from api.errors import RequestValidationError
from api.recovery import present, window
from pipeline import delivery_record, policy
from tests.unit.test_openapi import assert_valid

DAYS = 30


def _errors(body: Any) -> dict[str, list[str]]:
    with pytest.raises(RequestValidationError) as raised:
        window(body, "since", "until", DAYS)
    return raised.value.errors


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "since"),
        ({"since": None}, "since"),
        ({"since": "2026-12-01T10:00:00"}, "since"),  # no offset
        ({"since": "2026-13-01T10:00:00Z"}, "since"),
        ({"since": 5}, "since"),
        ({"since": "x" * 100}, "since"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "since"),  # before year 1 in UTC
        ({"since": "2026-12-01T10:00:00Z", "until": "9999-12-31T23:59:59-01:00"}, "until"),
        ({"since": "2026-12-01T10:00:00Z", "until": "2026-12-01T10:00:00Z"}, "since"),
        ({"since": "2026-11-01T09:59:59Z", "until": "2026-12-01T10:00:00Z"}, "until"),
        ({"since": "2026-12-01T10:00:00Z", "until": "soon"}, "until"),
        ({"since": "2026-12-01T10:00:00Z", "extra": 1}, "extra"),
        ("2026-12-01T10:00:00Z", "body"),
    ],
)
def test_a_bad_window_names_its_field(body: Any, field: str) -> None:
    assert field in _errors(body)


def test_a_window_defaults_until_to_now_and_keeps_offsets() -> None:
    since = datetime.now(UTC) - timedelta(hours=1)
    got = window({"since": since.isoformat()}, "since", "until", DAYS)
    assert got.since == since and got.since < got.until <= datetime.now(UTC)
    got = window(
        {"since": "2026-12-01T10:00:00+01:00", "until": "2026-12-31T09:00:00Z"},
        "since",
        "until",
        DAYS,
    )
    assert got.since == datetime(2026, 12, 1, 9, tzinfo=UTC)


def test_a_recovery_as_shown_fits_the_spec() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    row = {
        "id": "rcv_1", "destination_id": "evtd_1", "status": "running", "error": None,
        "total": 3, "since": at, "until": at + timedelta(hours=1), "created_at": at,
        "updated_at": at,
    }  # fmt: skip
    shown = present(row, {"requeued": 2, "skipped": 0, "delivered": 1})
    assert_valid("Recovery", {**shown, "request_id": "req_1"})
    assert (shown["since"], shown["until"]) == (
        "2026-12-01T00:00:00.000Z",
        "2026-12-01T01:00:00.000Z",
    )


def test_a_requeued_dead_letter_starts_a_new_chain_through_the_circuit() -> None:
    dead = {
        "id": "evdl_1", "tenant": "t", "destination_id": "evtd_1", "attempt": 4,
        "due_at": 123, "event": {"id": "evt_1", "type": "a.b", "created_at": "x"},
        "dead_letter_reason": "retries exhausted", "dead_lettered_at": "y", "skipped": True,
        "last_error": "HTTP 500",
        "manual_retry": True, delivery_record.BODY: b'{"id": "evt_1"}',
    }  # fmt: skip
    head, body = requeue.from_dead_letter(dead)
    assert body == b'{"id": "evt_1"}'
    assert (head["attempt"], head["due_at"]) == (0, None)
    assert not set(head) & {*requeue.ENDED_CHAIN_KEYS, delivery_record.BODY}
    assert not policy.asked_for_now(head)
    envelope = {"id": "evt_1", "object": "event", "type": "a.b", "data": {}, "created_at": "x"}
    delivery = {"id": "evdl_1", "destination_id": "evtd_1"}
    recovered, _ = requeue.from_index(delivery, envelope, "t", "g", asked_now=False)
    retried, _ = requeue.from_index(delivery, envelope, "t", "g", asked_now=True)
    assert not policy.asked_for_now(recovered) and policy.asked_for_now(retried)


def test_a_dead_letter_is_one_line_of_six_fields() -> None:
    record = {
        "dead_lettered_at": "2026-12-01T10:00:00.000Z", "tenant": "t", "destination_id": "evtd_1",
        "event": {"type": "a.b"}, "id": "evdl_1", "dead_letter_reason": "permanent failure",
        "last_error": "HTTP 400\tbad\nrequest",
    }  # fmt: skip
    assert line(record).split("\t") == [
        "2026-12-01T10:00:00.000Z", "t", "evtd_1", "a.b", "evdl_1",
        "permanent failure: HTTP 400 bad request",
    ]  # fmt: skip
    del record["last_error"]  # written before last_error existed
    assert line(record).endswith("\tpermanent failure")
