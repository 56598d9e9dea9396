"""The fold agent: destination-changes → the `destinations` table (one writer per record).

Both topics are keyed `tenant/id` (pipeline/ids.py `scoped`): one record per tenant's id.
The table's values are the bytes the worker's DestinationView holds too (one copy).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import faust
import orjson
from faust.types import TableT

from pipeline.destinations import encode, fold
from pipeline.ids import unscoped
from pipeline.view import DestinationView


def register(
    app: faust.App,
    changes: faust.TopicT,
    table: TableT[bytes, bytes | None],
    view: DestinationView,
) -> Any:
    """Attach the fold agent to `app`. Changes are applied in partition order."""

    def share_recovered(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Sent once the table is recovered: the view takes the table's copy of each
        # record it read before the table had it.
        view.adopt_shared()

    # mode's handler type spells the sender positional-only, which mypy will not match.
    app.on_rebalance_complete.connect(share_recovered)  # type: ignore[arg-type]

    @app.agent(changes, name="fold")
    async def fold_changes(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        view.share_with(cast(Mapping[bytes, bytes | None], table.data))
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
            table[key] = encode(record)
            if record.get("deleted"):
                # The marker above tells waiters their delete is folded; the tombstone
                # lets compaction remove the destination from the topic for good.
                del table[key]
            yield None

    return fold_changes
