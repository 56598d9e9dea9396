"""Ids scoped per tenant, and destination generations: keys, the fold, delivery ids."""

from __future__ import annotations

from typing import Any

from pipeline import delivery_record, ids
from pipeline.agents.router import deliveries_for, delivery_id
from pipeline.destinations import ACTIVE, INACTIVE, PENDING, fold


def change(op: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"op": op, "change_id": f"chg_{n}", "at": f"2026-01-01T00:00:0{n}Z",
            "destination_id": "evtd_x", **extra}  # fmt: skip


def create(n: int) -> dict[str, Any]:
    fields = {"tenant": "a", "name": "n", "type": "webhook", "events": ["*"]}
    return change("create", n, fields=fields)


def test_a_key_splits_at_its_last_separator_whatever_the_tenant_holds() -> None:
    for tenant in ("dev", "a/b", "x/", "/"):
        assert ids.unscoped(ids.scoped(tenant, "evtd_x")) == (tenant, "evtd_x")
    assert ids.unscoped("evtd_legacy") == (None, "evtd_legacy")
    assert ids.scoped("a", "evtd_x") != ids.scoped("b", "evtd_x")
    # Changes go where the record lives: a record from before scoping is under its bare id.
    assert ids.change_key("a", "evtd_x", None) == "a/evtd_x"
    assert ids.change_key("a", "evtd_x", {"generation": "chg_1"}) == "a/evtd_x"
    assert ids.change_key("a", "evtd_x", {"tenant": "a"}) == "evtd_x"


def test_each_create_begins_a_generation_and_a_delete_ends_it() -> None:
    first = fold(None, create(1))
    assert first["generation"] == "chg_1"
    assert fold(first, change("update", 2, fields={"name": "m"}))["generation"] == "chg_1"
    deleted = fold(first, change("delete", 3))
    again = fold(deleted, create(4))
    assert again["change_ok"] and again["generation"] == "chg_4"


def test_worker_changes_for_another_generation_are_void() -> None:
    """A `verified` or `auto_disable` decided on a deleted destination's delivery must not
    change the destination created again under its id."""
    current = fold(None, create(4))
    for op in ("verified", "auto_disable"):
        stale = fold(current, change(op, 5, generation="chg_1"))
        assert not stale["change_ok"], op
        assert stale["status"] == PENDING and stale["verified_at"] is None, op
    assert fold(current, change("verified", 5, generation="chg_4"))["status"] == ACTIVE
    assert fold(current, change("auto_disable", 5, generation="chg_4"))["status"] == INACTIVE
    # A change written before generations existed still applies.
    assert fold(current, change("verified", 5))["status"] == ACTIVE


EVENT = {"id": "evt_same", "tenant": "a", "created_at": "2026-01-01T00:00:00.000Z"}
DESTINATION = {"id": "evtd_x", "tenant": "a", "generation": "chg_1"}


def test_delivery_ids_name_tenant_generation_and_acceptance_time() -> None:
    one = delivery_id(EVENT, DESTINATION)
    assert one == delivery_id(dict(EVENT), dict(DESTINATION)), "stable: routed again, same id"
    others = {
        delivery_id({**EVENT, "tenant": "b"}, {**DESTINATION, "tenant": "b"}),
        delivery_id(EVENT, {**DESTINATION, "generation": "chg_9"}),
        # The same publisher-chosen id reused after the dedupe window: a new event.
        delivery_id({**EVENT, "created_at": "2026-01-02T00:00:01.000Z"}, DESTINATION),
    }
    assert one not in others and len(others) == 3
    assert one.startswith(ids.DELIVERY)


class _View:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self._records = records

    def get(self, tenant: str, destination_id: str) -> dict[str, Any] | None:
        found = [r for r in self._records if (r["tenant"], r["id"]) == (tenant, destination_id)]
        return found[0] if found else None

    def match(
        self, tenant: str, event_type: str, stamp: Any, event: Any = None
    ) -> list[dict[str, Any]]:
        return [r for r in self._records if r["tenant"] == tenant]


def test_a_delivery_carries_tenant_and_generation_and_is_keyed_by_both_ids() -> None:
    view = _View([DESTINATION, {**DESTINATION, "tenant": "b", "generation": "chg_2"}])
    event = {**EVENT, "object": "event", "type": "a.b", "data": {}}
    [(key, value)] = deliveries_for(event, view)  # type: ignore[arg-type]
    delivery = delivery_record.decode(value)
    assert key == b"a/evtd_x"
    assert delivery["tenant"] == "a" and delivery["destination_generation"] == "chg_1"
    # Sent to one destination (a test event, a replay): only the tenant's own.
    only = deliveries_for({**event, "tenant": "c", "destination_id": "evtd_x"}, view)  # type: ignore[arg-type]
    assert only == []
