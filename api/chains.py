"""One retry chain per delivery: a manual retry or a replay claims, in the index, the
deliveries it starts again, so no second chain runs beside a live one under the same id.

A delivery's chain is live while its status is `pending` or `retrying`: a tier copy of it
is queued, and another attempt would be a duplicate (and a failure would turn a
`succeeded` summary back to `retrying`). A claim moves a finished delivery (`succeeded`,
`failed`, `canceled`) to `retrying` in one conditional UPDATE, so of two concurrent calls
only one starts a chain; the new chain's attempts then set the status as usual. A claim
whose record could not be queued is released (the old status put back).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import asyncpg

from api.index import fetch_all

# Statuses a manual retry may restart: the chain is over and did not succeed. `canceled`
# (a delivery dropped for a deleted or disabled destination) where that status exists.
RETRYABLE = ("failed", "canceled")
# Statuses a replay may restart: the chain is over.
FINISHED = ("succeeded", "failed", "canceled")

# A destination is one life of its id (`generation`): a delivery of the same event to a
# destination deleted and created again under that id is another chain, left alone.
ONE_LIFE = """(d.destination_id, coalesce(d.destination_generation, '')) in
      (select * from unnest($3::text[], $4::text[]))"""
CLAIM = f"""
update deliveries d set status = 'retrying', next_attempt_at = now(), updated_at = now()
from deliveries previous
where previous.tenant = d.tenant and previous.id = d.id and d.tenant = $1 and d.event_id = $2
  and {ONE_LIFE} and d.status = any($5::text[])
returning d.id, d.destination_id, previous.status"""  # noqa: S608 - constant
RELEASE = """
update deliveries set status = $3, updated_at = now()
where tenant = $1 and id = $2 and status = 'retrying'"""
INDEXED = f"""
select destination_id from deliveries d
where d.tenant = $1 and d.event_id = $2 and {ONE_LIFE}"""  # noqa: S608 - constant

# Destination id → its generation: the destinations a call restarts deliveries to.
Destinations = Mapping[str, str | None]


class Claim:
    """Deliveries of one event a call restarts: id → the status they had."""

    def __init__(self, tenant: str, rows: Iterable[asyncpg.Record]) -> None:
        self.tenant = tenant
        self.previous = {str(r["id"]): str(r["status"]) for r in rows}
        self.destination_ids = {str(r["destination_id"]) for r in rows}


def _pairs(destinations: Destinations) -> tuple[list[str], list[str]]:
    ordered = sorted(destinations)
    return ordered, [destinations[d] or "" for d in ordered]


async def claim(
    db: asyncpg.Pool | asyncpg.Connection,
    tenant: str,
    event_id: str,
    destinations: Destinations,
    statuses: tuple[str, ...],
) -> Claim:
    """Claim the event's deliveries to `destinations` whose status is in `statuses`; on a
    connection, inside the caller's transaction (a recovery marks its item with it)."""
    args = (tenant, event_id, *_pairs(destinations), list(statuses))
    if isinstance(db, asyncpg.Pool):
        return Claim(tenant, await fetch_all(db, CLAIM, *args))
    return Claim(tenant, await db.fetch(CLAIM, *args))


async def live(
    pool: asyncpg.Pool, tenant: str, event_id: str, destinations: Destinations, taken: Claim
) -> list[str]:
    """The destinations among `destinations` whose delivery of the event is live: indexed
    but not claimed by `taken` (a delivery routed moments ago may not be indexed yet)."""
    rows = await fetch_all(pool, INDEXED, tenant, event_id, *_pairs(destinations))
    return sorted({str(r["destination_id"]) for r in rows} - taken.destination_ids)


async def release(pool: asyncpg.Pool, taken: Claim) -> None:
    """Put back the status of claimed deliveries whose record could not be queued."""
    for delivery_id, status in taken.previous.items():
        await fetch_all(pool, RELEASE, taken.tenant, delivery_id, status)
