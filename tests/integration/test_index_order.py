"""Polling in index order: a row the index wrote late (an event created before the poller's
last `created_after`, indexed only now) is found by `indexed_after` (issue 12, D22)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from tests.integration.api_client import Api
from tests.integration.conftest import Services
from tests.support import eventually


async def test_indexed_after_finds_a_row_indexed_late_that_created_after_misses(
    api: Api, services: Services
) -> None:
    event_type = f"late_index.e{uuid.uuid4().hex[:12]}"
    first = await api.publish(event_type, {"n": 1})

    async def listed(query: str) -> dict[str, Any]:
        status, body = await api.call("GET", f"/v2/events?type={event_type}&{query}")
        assert status == 200, body
        return dict(body)

    async def indexed() -> dict[str, Any] | None:
        page = await listed("indexed_after=0")
        return page if page["data"] else None

    page = await eventually(indexed, what="the first event indexed")
    assert [e["id"] for e in page["data"]] == [first]
    assert page["has_more"] is False
    token, seen_at = page["next_cursor"], page["data"][0]["created_at"]
    assert token != "0"
    assert (await listed(f"indexed_after={token}"))["data"] == []

    # An event created a minute before the first one, written to the index only now (as an
    # indexer behind, or catching up after PostgreSQL was down, writes it).
    late_id = f"evt_late_{uuid.uuid4().hex}"
    created = datetime.fromisoformat(seen_at.replace("Z", "+00:00")) - timedelta(minutes=1)
    connection = await asyncpg.connect(services.database_url)
    try:
        await connection.execute(
            "insert into events (tenant, id, type, data, created_at) "
            "values ('dev', $1, $2, $3, $4)",
            late_id,
            event_type,
            json.dumps({"n": 0}),
            created,
        )
    finally:
        await connection.close()

    assert (await listed(f"created_after={seen_at}"))["data"] == [], "the documented gap"
    polled = await listed(f"indexed_after={token}")
    assert [e["id"] for e in polled["data"]] == [late_id]
    assert polled["next_cursor"] not in (None, token)

    status, error = await api.call("GET", "/v2/events?indexed_after=x1")
    assert (status, list(error["errors"])) == (400, ["indexed_after"])
