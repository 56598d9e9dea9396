"""Ids a request makes under an Idempotency-Key are the same on every run, and the fold
takes the same create appended twice as one (issue 12, B10)."""

from __future__ import annotations

from datetime import UTC, datetime

from api.stable_ids import Attempt, IdSource, seed_of
from pipeline import ids
from pipeline.destinations import fold

FIRST_SEEN = datetime(2026, 12, 1, 10, 0, 0, 123_000, tzinfo=UTC)


def _attempt(key: str = "k", api_key: str = "a" * 64, tenant: str = "t") -> Attempt:
    return Attempt(FIRST_SEEN, seed_of(tenant, api_key, key))


def test_a_rerun_makes_the_same_ids_and_time() -> None:
    first, retry = _attempt(), _attempt()
    assert first.id(ids.EVENT, "0") == retry.id(ids.EVENT, "0")
    assert first.id(ids.EVENT, "0") != first.id(ids.EVENT, "1")
    assert first.id(ids.DESTINATION) != first.id(ids.CHANGE, "create")
    assert first.now() == retry.now() == "2026-12-01T10:00:00.123Z"


def test_ids_differ_by_key_api_key_and_tenant_and_sort_by_first_use() -> None:
    made = {
        _attempt().id(ids.EVENT, "0"),
        _attempt(key="other").id(ids.EVENT, "0"),
        _attempt(api_key="b" * 64).id(ids.EVENT, "0"),
        _attempt(tenant="u").id(ids.EVENT, "0"),
    }
    assert len(made) == 4
    later = Attempt(datetime(2026, 12, 1, 10, 0, 1, tzinfo=UTC), seed_of("t", "a" * 64, "k"))
    assert later.id(ids.EVENT, "0") > _attempt().id(ids.EVENT, "0")


def test_without_a_key_ids_are_fresh() -> None:
    source = IdSource()
    assert source.id(ids.EVENT, "0") != source.id(ids.EVENT, "0")
    assert not source.stable


def _create(change_id: str) -> dict[str, object]:
    return {
        "op": "create",
        "change_id": change_id,
        "at": "2026-12-01T10:00:00.000Z",
        "destination_id": "evtd_1",
        "fields": {"tenant": "t", "name": "n", "type": "webhook", "events": ["*"]},
    }


def test_the_same_create_appended_twice_is_done_once_and_another_is_refused() -> None:
    record = fold(None, _create("chg_a"))
    again = fold(record, _create("chg_a"))
    assert again["change_ok"] is True
    assert {k: v for k, v in again.items() if k != "change_id"} == {
        k: v for k, v in record.items() if k != "change_id"
    }
    assert fold(record, _create("chg_b"))["change_ok"] is False
