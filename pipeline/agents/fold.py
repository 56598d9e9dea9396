"""The fold agent: destination-changes → the `destinations` table (one writer per record).

Both topics are keyed `tenant/id` (pipeline/ids.py `scoped`): one record per tenant's id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import faust
import orjson
from faust.types import TableT

from pipeline.destinations import fold
from pipeline.ids import unscoped


def register(app: faust.App, changes: faust.TopicT, table: TableT[bytes, bytes | None]) -> Any:
    """Attach the fold agent to `app`. Changes are applied in partition order."""

    @app.agent(changes, name="fold")
    async def fold_changes(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            key = event.key
            if not isinstance(key, bytes) or event.value is None:
                continue
            change = orjson.loads(event.value)
            # The key is `tenant/id`; the record's id is the tenant's own.
            change["destination_id"] = unscoped(key.decode())[1]
            raw = table.get(key)
            current = orjson.loads(raw) if raw else None
            record = fold(current, change)
            table[key] = orjson.dumps(record)
            if record.get("deleted"):
                # The marker above tells waiters their delete is folded; the tombstone
                # lets compaction remove the destination from the topic for good.
                del table[key]
            yield None

    return fold_changes
