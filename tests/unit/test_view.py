"""The destination view's in-memory side: records applied as its follow loop reads them."""

from __future__ import annotations

from typing import Any

from pipeline.destinations import encode, fold
from pipeline.view import PARSED_RECORDS, DestinationView


def change(op: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"op": op, "change_id": f"chg_{n}", "at": "2026-01-01T00:00:00Z", **extra}


def create(destination_id: str, tenant: str = "t", events: tuple[str, ...] = ("a.b",)) -> Any:
    fields = {"tenant": tenant, "name": "n", "type": "webhook", "events": list(events)}
    return fold(None, {**change("create", 1, fields=fields), "destination_id": destination_id})


def apply(view: DestinationView, record: dict[str, Any], offset: int) -> bytes:
    key = f"{record.get('tenant') or 't'}/{record['id']}".encode()
    value = encode(record)
    view._apply(key, value, 0, offset)
    return value


def test_match_routes_with_the_state_at_the_stamp_and_names_the_latest_record() -> None:
    view = DestinationView("unused:9092")
    record = create("d1")
    apply(view, record, 10)
    disabled = fold(record, change("disable", 2))
    apply(view, disabled, 11)
    renamed = fold(fold(disabled, change("enable", 3)), change("update", 4, fields={"name": "x"}))
    apply(view, renamed, 12)
    assert view.match("t", "a.b", {0: 10}) == []  # published before it existed
    assert [r["name"] for r in view.match("t", "a.b", {0: 11})] == ["x"]
    assert view.match("t", "a.b", {0: 12}) == []  # disabled when published
    assert [r["generation"] for r in view.match("t", "a.b", {0: 13})] == [record["generation"]]
    assert view.match("t", "a.b") == [renamed]
    assert view.match("u", "a.b") == []


def test_a_change_replaces_the_parsed_record_and_a_delete_forgets_it() -> None:
    view = DestinationView("unused:9092")
    record = create("d1")
    apply(view, record, 1)
    assert view.get("t", "d1") == record
    renamed = fold(record, change("update", 2, fields={"name": "x"}))
    apply(view, renamed, 2)
    assert view.get("t", "d1") == renamed
    view._apply(b"t/d1", None, 0, 3)
    assert view.get("t", "d1") is None
    assert view.match("t", "a.b") == []


def test_reads_beyond_the_parsed_cache_parse_again() -> None:
    view = DestinationView("unused:9092")
    records = [create(f"d{n}") for n in range(PARSED_RECORDS + 10)]
    for n, record in enumerate(records):
        apply(view, record, n)
    assert [view.get("t", r["id"]) for r in records] == records
    assert len(view._parsed) == PARSED_RECORDS


def test_counts_and_listing_by_tenant() -> None:
    view = DestinationView("unused:9092")
    first, second = create("d1"), create("d2", tenant="u")
    apply(view, first, 1)
    apply(view, second, 2)
    apply(view, fold(first, change("disable", 2)), 3)
    assert view.counts() == {("inactive", "webhook"): 1, ("pending_verification", "webhook"): 1}
    assert [r["id"] for r in view.all("u")] == ["d2"]
    assert len(view.all()) == 2


def test_the_view_holds_the_fold_tables_bytes() -> None:
    view = DestinationView("unused:9092")
    table: dict[bytes, bytes | None] = {}
    early = create("d1")
    read_early = apply(view, early, 1)  # read before the table was recovered
    table[b"t/d1"] = bytes(memoryview(read_early))
    view.share_with(table)
    assert view.adopt_shared() == 1
    assert view._versions["t/d1"].raw is table[b"t/d1"]
    later = fold(early, change("update", 2, fields={"name": "x"}))
    table[b"t/d1"] = encode(later)  # the fold writes first; the view reads its own copy
    apply(view, later, 2)
    assert view._versions["t/d1"].raw is table[b"t/d1"]
    assert view.get("t", "d1") == later
