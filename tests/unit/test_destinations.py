"""The pure fold of destination changes, and the match index."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.destinations import ACTIVE, INACTIVE, PENDING, MatchIndex, fold


def change(op: str, n: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "op": op,
        "change_id": f"chg_{n}",
        "at": f"2026-01-01T00:00:0{n}Z",
        "destination_id": "evtd_1",
        **extra,
    }


def created() -> dict[str, Any]:
    return fold(
        None,
        change(
            "create",
            fields={
                "tenant": "t",
                "name": "n",
                "type": "webhook",
                "events": ["*"],
                "status": "active",
            },
        ),
    )


def test_create_is_pending_and_ignores_derived_fields() -> None:
    record = created()
    assert record["status"] == PENDING
    assert record["change_ok"] is True
    assert record["tenant"] == "t"


def test_create_on_existing_id_is_rejected_and_keeps_the_record() -> None:
    first = created()
    second = fold(first, change("create", 2, fields={"tenant": "other", "name": "x"}))
    assert second["change_ok"] is False
    assert second["tenant"] == "t"
    assert second["change_id"] == "chg_2"


def test_verified_activates_a_pending_destination_once() -> None:
    record = fold(created(), change("verified", 2))
    assert record["status"] == ACTIVE
    assert record["verified_at"] == "2026-01-01T00:00:02Z"
    again = fold(record, change("verified", 3))
    assert again["change_ok"] is False
    assert again["verified_at"] == "2026-01-01T00:00:02Z"


def test_enable_returns_unverified_destination_to_pending() -> None:
    disabled = fold(created(), change("disable", 2))
    assert disabled["status"] == INACTIVE
    assert fold(disabled, change("enable", 3))["status"] == PENDING
    verified = fold(fold(disabled, change("verified", 3)), change("enable", 4))
    assert verified["status"] == ACTIVE


def test_verified_does_not_reactivate_a_disabled_destination() -> None:
    disabled = fold(created(), change("disable", 2))
    assert fold(disabled, change("verified", 3))["status"] == INACTIVE


def test_auto_disable_records_reason_and_user_patch_survives() -> None:
    record = fold(created(), change("update", 2, fields={"name": "renamed"}))
    record = fold(record, change("auto_disable", 3, reason="410 Gone"))
    assert record["status"] == INACTIVE
    assert record["status_reason"] == "410 Gone"
    assert record["name"] == "renamed"


def test_delete_then_changes_are_rejected() -> None:
    deleted = fold(created(), change("delete", 2))
    assert deleted["deleted"] is True
    assert deleted["change_ok"] is True
    assert fold(deleted, change("update", 3, fields={"name": "x"}))["change_ok"] is False
    assert fold(None, change("enable", 3))["change_ok"] is False


def test_match_exact_star_and_prefix() -> None:
    index = MatchIndex()
    index.put("exact", "t", ["task_run.completed"])
    index.put("star", "t", ["*"])
    index.put("prefix", "t", ["task_run.*"])
    index.put("deep", "t", ["task_run.completed.*"])
    index.put("other_tenant", "u", ["*"])
    assert index.match("t", "task_run.completed") == {"exact", "star", "prefix"}
    assert index.match("t", "task_run.completed.late") == {"star", "prefix", "deep"}
    assert index.match("t", "credential.verified") == {"star"}
    assert index.match("v", "task_run.completed") == set()


def test_reindex_and_remove() -> None:
    index = MatchIndex()
    index.put("d", "t", ["a.b", "a.*"])
    index.put("e", "t", ["a.b"])
    assert index.match("t", "a.b") == {"d", "e"}
    index.remove("d", "t", ["a.b"])
    index.put("d", "t", ["c.d"])
    assert index.match("t", "a.b") == {"d", "e"}  # still under a.*
    index.remove("d", "t", ["a.*", "c.d"])
    assert index.match("t", "a.b") == {"e"}
    assert index.match("t", "c.d") == set()
    index.remove("e", "t", ["a.b"])
    index.remove("e", "t", ["a.b"])
    assert index.match("t", "a.b") == set()
    assert index._exact == {}


types = st.from_regex(r"[a-z]{1,3}(\.[a-z]{1,3}){1,2}", fullmatch=True)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["d1", "d2", "d3"]),
            st.lists(types | st.just("*"), min_size=1, max_size=3),
        ),
        max_size=8,
    ),
    types,
)
def test_index_agrees_with_a_linear_scan(puts: list[tuple[str, list[str]]], event: str) -> None:
    index = MatchIndex()
    latest: dict[str, list[str]] = {}
    for destination_id, patterns in puts:
        index.remove(destination_id, "t", latest.get(destination_id, []))
        index.put(destination_id, "t", patterns)
        latest[destination_id] = patterns

    def matches(pattern: str) -> bool:
        return pattern in ("*", event) or (
            pattern.endswith(".*") and event.startswith(pattern[:-1])
        )

    expected = {d for d, patterns in latest.items() if any(matches(p) for p in patterns)}
    assert index.match("t", event) == expected


def test_versions_route_with_the_state_at_the_stamp() -> None:
    from pipeline.destinations import Versions

    record = created()
    versions = Versions(partition=0)
    versions.add(10, record, b"10")
    disabled = fold(record, change("disable", 2))
    versions.add(11, disabled, b"11")
    enabled = fold(disabled, change("enable", 3))
    versions.add(12, enabled, b"12")
    assert versions.as_of({0: 10}) is None  # published before it existed
    assert versions.as_of({0: 11}) == ("*",)
    assert versions.as_of({0: 12}) is None  # disabled then
    assert versions.as_of({0: 13}) == ("*",)
    assert versions.as_of({1: 5}) == ("*",)  # another partition's stamp says nothing
    assert versions.raw == b"12"


def test_versions_cut_by_compaction_fall_back_to_the_creation_bound() -> None:
    from pipeline.destinations import Versions

    record = {**fold(created(), change("update", 2, fields={"name": "x"})), "routes_from": {"0": 7}}
    versions = Versions(partition=0)
    versions.add(40, record, b"")  # only the latest version survived compaction
    assert versions.as_of({0: 7}) is None
    assert versions.as_of({0: 8}) == ("*",)


def test_versions_that_route_alike_share_one_entry() -> None:
    from pipeline.destinations import MAX_VERSIONS, Versions

    record = created()
    versions = Versions(partition=0)
    versions.add(10, record, b"")
    for n in range(MAX_VERSIONS * 2):  # renames: routing unchanged, the creation kept
        record = fold(record, change("update", n + 2, fields={"name": f"n{n}"}))
        versions.add(11 + n, record, b"")
    assert versions.as_of({0: 10}) is None
    assert versions.as_of({0: 11}) == ("*",)
    record = fold(record, change("update", 99, fields={"events": ["c.*"]}))
    versions.add(100, record, b"")
    assert versions.as_of({0: 100}) == ("*",)
    assert versions.as_of({0: 101}) == ("c.*",)
    assert versions.patterns() == {"*", "c.*"}


def test_versions_beyond_the_limit_fall_back_to_the_creation_bound() -> None:
    from pipeline.destinations import MAX_VERSIONS, Versions

    record = {**created(), "routes_from": {"0": 5}}
    versions = Versions(partition=0)
    versions.add(10, record, b"")
    for n in range(MAX_VERSIONS):  # each routes differently from the one before
        op = "disable" if n % 2 == 0 else "enable"
        record = fold(record, change(op, n + 2))
        versions.add(11 + n, record, b"")
    # The creation entry is gone: an event stamped before it is judged by `routes_from`.
    assert versions.as_of({0: 5}) is None
    assert versions.as_of({0: 6}) is None  # the oldest kept entry: disabled
    assert versions.as_of({0: 13}) == ("*",)
