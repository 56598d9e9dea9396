"""How the indexer groups one batch's records into rows (issue 14): one row per delivery,
from its own record when the batch has it, and upserts that never change a row twice."""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.indexer import Batch, _rounds, _summary
from pipeline.topics import ATTEMPTS, DELIVERIES

EVENT = {"id": "evt_1", "object": "event", "type": "a.b", "data": {},
         "created_at": "2026-01-01T00:00:00.000Z"}  # fmt: skip
DELIVERY = {"id": "evdl_1", "event": EVENT, "tenant": "t", "destination_id": "evtd_1",
            "destination_generation": "chg_1", "attempt": 0, "due_at": None,
            "routed_at": "2026-01-01T00:00:00.100Z"}  # fmt: skip


def _attempt(**more: Any) -> dict[str, Any]:
    return {"id": "evat_1", "delivery_id": "evdl_1", "event_id": "evt_1", "event_type": "a.b",
            "tenant": "t", "destination_id": "evtd_1", "destination_generation": "chg_1",
            "attempt": 0, "outcome": "success", "created_at": "2026-01-01T00:00:05.000Z",
            **more}  # fmt: skip


def test_a_delivery_gets_one_row_from_its_own_record_even_after_its_attempt() -> None:
    batch = Batch()
    batch.add(ATTEMPTS, orjson.dumps(_attempt()))
    batch.add(DELIVERIES, orjson.dumps(DELIVERY))
    batch.add(DELIVERIES, orjson.dumps({**DELIVERY, "routed_at": "2026-01-02T00:00:00Z"}))
    [(key, row)] = batch.deliveries.items()
    assert key == ("t", "evdl_1")
    assert row[5].isoformat() == "2026-01-01T00:00:00.100000+00:00"  # routed_at, the first


def test_an_attempt_alone_makes_its_delivery_row() -> None:
    batch = Batch()
    batch.add(ATTEMPTS, orjson.dumps(_attempt()))
    batch.add(ATTEMPTS, orjson.dumps(_attempt(id="evat_2", delivery_id="evdl_2")))
    assert [row[0] for row in batch.deliveries.values()] == ["evdl_1", "evdl_2"]
    assert len(batch.attempts) == 2


def test_rows_of_one_key_go_to_successive_statements_in_order() -> None:
    rows = [("t", "a", 1), ("t", "b", 1), ("t", "a", 2), ("u", "a", 1), ("t", "a", 3)]
    assert _rounds(rows, 2) == [
        [("t", "a", 1), ("t", "b", 1), ("u", "a", 1)],
        [("t", "a", 2)],
        [("t", "a", 3)],
    ]


def test_the_latest_attempt_decides_the_status() -> None:
    batch = Batch()
    batch.add(ATTEMPTS, orjson.dumps(_attempt(outcome="failed", next={"due_ms": 1000})))
    dead = {"dead_letter": "deliveries.dlq"}
    batch.add(ATTEMPTS, orjson.dumps(_attempt(id="evat_2", outcome="failed", next=dead)))
    batch.add(ATTEMPTS, orjson.dumps(_attempt(id="evat_3", outcome="canceled")))
    retrying, failed, canceled = batch.attempts
    assert _summary(retrying)[0::3] == ("retrying", retrying[11])
    assert _summary(failed)[0::3] == ("failed", None)
    assert _summary(canceled)[0::3] == ("canceled", None)
    assert _summary(None) == ("pending", None, None, None)
