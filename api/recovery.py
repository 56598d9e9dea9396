"""Recoveries: re-attempt a destination's failed deliveries of a time window, once each, in
publish order, through the normal delivery path (its rate limit and circuit breaker).

    POST …/recover → `create`: the job row and its items (the deliveries failed now, in the
    window) in one transaction, leased to this process → `_run` in a task: a page of items
    at a time, each claimed in the index (api/chains.py) and put back on `deliveries`
    (api/requeue.py) → completed.

The job lives in PostgreSQL, not in the process: an API process that stops leaves its job
`running` with a lease that lapses, and the resume loop of any API process (this one after a
restart included) takes it over and goes on from the items not requeued yet. An item is
marked `claimed` in the same transaction as its claim, and `requeued` once the broker has
its record, so a takeover sends again only the records of the page that was in flight
(at least once, the same delivery id: receivers deduplicate on `webhook-id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from api import chains, requeue
from api.errors import RequestValidationError
from api.index import iso, present_event
from pipeline import ids
from pipeline.db import DATABASE_ERRORS
from pipeline.settings import Settings
from pipeline.view import DestinationView

log = logging.getLogger(__name__)

RECOVERY = "rcv_"
PAGE_ITEMS = 100
STATUSES = ("running", "completed", "failed")

# The deliveries a recovery takes: failed now, created (routed to the destination) in the
# window, of this life of the destination id, whose event is still indexed (its body is
# rebuilt from it); in publish order. Migration 015's partial index finds them.
TAKE_ITEMS = """
insert into recovery_items (tenant, recovery_id, seq, delivery_id, event_id)
select d.tenant, $2, row_number() over (order by e.created_at, e.id, d.id), d.id, d.event_id
from deliveries d join events e on e.tenant = d.tenant and e.id = d.event_id
where d.tenant = $1 and d.destination_id = $3 and d.status = 'failed'
  and coalesce(d.destination_generation, '') = $4
  and d.created_at >= $5 and d.created_at < $6"""
LEASE = "lease_until = now() + make_interval(secs => $3), updated_at = now()"
RENEW = f"""
update recoveries set {LEASE}
where tenant = $1 and id = $2 and owner = $4 and status = 'running'"""  # noqa: S608 - constant
TAKE_OVER = f"""
update recoveries r set owner = $1, {LEASE.replace("$3", "$2")}
from (select tenant, id from recoveries
      where status = 'running' and (lease_until is null or lease_until < now())
      order by created_at limit 1 for update skip locked) lapsed
where r.tenant = lapsed.tenant and r.id = lapsed.id
returning r.tenant, r.id"""  # noqa: S608 - constant
PAGE = """
select i.seq, i.state, i.delivery_id, d.destination_id, e.id, e.type, e.data, e.created_at
from recovery_items i
left join deliveries d on d.tenant = i.tenant and d.id = i.delivery_id
left join events e on e.tenant = i.tenant and e.id = i.event_id
where i.tenant = $1 and i.recovery_id = $2 and i.state in ('queued', 'claimed')
order by i.seq limit $3"""
MARK = """
update recovery_items set state = $4
where tenant = $1 and recovery_id = $2 and seq = any($3::integer[])"""
FINISH = """
update recoveries set status = $3, error = $4, owner = null, lease_until = null,
    updated_at = now()
where tenant = $1 and id = $2 and status = 'running'"""
PROGRESS = """
select count(*) filter (where i.state = 'requeued') as requeued,
       count(*) filter (where i.state = 'skipped') as skipped,
       count(*) filter (where i.state = 'requeued' and d.status = 'succeeded') as delivered
from recovery_items i
left join deliveries d on d.tenant = i.tenant and d.id = i.delivery_id
where i.tenant = $1 and i.recovery_id = $2"""
COLUMNS = "id, destination_id, status, error, total, since, until, created_at, updated_at"


def window(body: Any, since_field: str, until_field: str, max_days: int) -> Window:
    """The window of a request body: `since` required, `until` optional (now); both RFC 3339
    with an offset, since < until, at most `max_days` long. 400 naming the field (`body`
    for one that is not an object, or has other fields)."""
    if not isinstance(body, dict):
        raise RequestValidationError({"body": ["must be a JSON object."]})
    known = (since_field, until_field)
    errors = {str(name): ["is not a known field."] for name in body if name not in known}
    since = _timestamp(body.get(since_field), since_field, errors, required=True)
    until = _timestamp(body.get(until_field), until_field, errors, required=False)
    until = until or datetime.now(UTC)
    if since is not None and not errors:
        if since >= until:
            errors[since_field] = [f"must be before {until_field} ({iso(until)})."]
        elif until - since > timedelta(days=max_days):
            errors[until_field] = [f"must be at most {max_days} days after {since_field}."]
    if errors:
        raise RequestValidationError(errors)
    assert since is not None
    return Window(since, until)


class Window:
    """A recovery's time window: deliveries created at `since` or later, before `until`."""

    def __init__(self, since: datetime, until: datetime) -> None:
        self.since = since
        self.until = until


def _timestamp(
    raw: Any, field: str, errors: dict[str, list[str]], *, required: bool
) -> datetime | None:
    if raw is None:
        if required:
            errors[field] = ["is required: an RFC 3339 timestamp, e.g. 2026-12-01T10:00:00Z."]
        return None
    try:
        if not isinstance(raw, str) or len(raw) > 64:
            raise ValueError(raw)
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        if value.tzinfo is None:
            errors[field] = ["must have a UTC offset (Z or ±hh:mm), as RFC 3339 requires."]
            return None
        return value.astimezone(UTC)  # year 1 at +01:00 is before year 1 in UTC: overflow
    except (ValueError, OverflowError):
        errors[field] = ["must be an RFC 3339 timestamp, e.g. 2026-12-01T10:00:00Z."]
        return None


def present(row: asyncpg.Record, progress: asyncpg.Record) -> dict[str, Any]:
    """A recovery as the API shows it: `requeued` of `total` put back on the delivery path,
    `delivered` of those succeeded since (as the index knows), `skipped` no longer failed
    when their turn came."""
    return {
        "object": "recovery",
        "id": row["id"],
        "destination_id": row["destination_id"],
        "status": row["status"],
        "error": row["error"],
        "total": row["total"],
        "requeued": progress["requeued"],
        "skipped": progress["skipped"],
        "delivered": progress["delivered"],
        "since": iso(row["since"]),
        "until": iso(row["until"]),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


class Recoveries:
    """Creates recovery jobs and runs them: its own, and those whose owner went away.

    Owned by the API app (api/app.py, `cleanup_ctx`): `start` begins the resume loop,
    `stop` cancels the running jobs (their leases lapse; any API process takes them over).
    """

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        view: DestinationView,
    ) -> None:
        self._lease_s = settings.recovery_lease_s
        self.max_window_days = settings.index_retention_days
        self._pool = pool
        self._producer = producer
        self._view = view
        self._owner = ids.new_id("own_")  # this process, as the holder of job leases
        self._tasks: set[asyncio.Task[None]] = set()

    async def create(
        self, tenant: str, destination: dict[str, Any], within: Window
    ) -> dict[str, Any]:
        """A new job over the destination's deliveries failed now in `within`, leased to
        this process and started; the job as shown."""
        job_id = ids.new_id(RECOVERY)
        generation = destination.get("generation")
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "insert into recoveries (tenant, id, destination_id, destination_generation,"
                " since, until, owner, lease_until) values ($1, $2, $3, $4, $5, $6, $7,"
                " now() + make_interval(secs => $8))",
                tenant, job_id, destination["id"], generation,
                within.since, within.until, self._owner, self._lease_s,
            )  # fmt: skip
            taken = await connection.execute(
                TAKE_ITEMS, tenant, job_id, destination["id"], generation or "",
                within.since, within.until,
            )  # fmt: skip
            await connection.execute(
                "update recoveries set total = $3 where tenant = $1 and id = $2",
                tenant, job_id, int(taken.split()[-1]),  # "INSERT 0 n"
            )  # fmt: skip
        self._spawn(tenant, job_id)
        shown = await self.get(tenant, destination["id"], job_id)
        assert shown is not None
        return shown

    async def get(self, tenant: str, destination_id: str, job_id: str) -> dict[str, Any] | None:
        """The tenant's job of this destination, as shown, with its progress; or None."""
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(
                f"select {COLUMNS} from recoveries "  # noqa: S608 - constant columns
                "where tenant = $1 and id = $2 and destination_id = $3",
                tenant, job_id, destination_id,
            )  # fmt: skip
            if row is None:
                return None
            return present(row, await connection.fetchrow(PROGRESS, tenant, job_id))

    async def start(self) -> None:
        """Begin the resume loop (called once the app's pool and producer exist)."""
        task = asyncio.create_task(self._resume_lapsed(), name="recoveries-resume")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Cancel the jobs this process runs and the resume loop, and let their leases lapse
        now, so another API process takes the jobs over at its next check."""
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(*DATABASE_ERRORS):
            async with self._pool.acquire() as connection:
                await connection.execute(
                    "update recoveries set lease_until = now()"
                    " where owner = $1 and status = 'running'",
                    self._owner,
                )

    async def _resume_lapsed(self) -> None:
        """Every third of a lease: take over a running job whose lease lapsed (its process
        stopped or died), one at a time, and run it here."""
        while True:
            try:
                async with self._pool.acquire() as connection:
                    taken = await connection.fetchrow(TAKE_OVER, self._owner, self._lease_s)
            except DATABASE_ERRORS as exc:
                log.warning("recovery resume check failed: %s", type(exc).__name__)
                taken = None
            if taken is not None:
                log.info("resuming recovery %s", taken["id"])
                self._spawn(taken["tenant"], taken["id"])
                continue
            await asyncio.sleep(self._lease_s / 3)

    def _spawn(self, tenant: str, job_id: str) -> None:
        task = asyncio.create_task(self._run(tenant, job_id), name=f"recovery-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, tenant: str, job_id: str) -> None:
        """Requeue the job's items page by page while this process holds its lease."""
        try:
            while await self._renewed(tenant, job_id):
                if not await self._next_page(tenant, job_id):
                    await self._finish(tenant, job_id, "completed", None)
                    return
        except RecoveryStopped as exc:
            await self._finish(tenant, job_id, "failed", str(exc))
        except KafkaError as exc:
            log.warning("recovery %s failed: broker unreachable (%s)", job_id, exc)
            await self._finish(tenant, job_id, "failed", "The event broker was unreachable.")
        except DATABASE_ERRORS as exc:
            # Its lease lapses; a resume loop takes it over once the index answers again.
            log.warning("recovery %s interrupted: %s", job_id, type(exc).__name__)
        except Exception:  # the edge of a task: the job must not stay running for good
            log.exception("recovery %s failed", job_id)
            await self._finish(tenant, job_id, "failed", "Herald failed to run the recovery.")

    async def _renewed(self, tenant: str, job_id: str) -> bool:
        async with self._pool.acquire() as connection:
            status: str = await connection.execute(
                RENEW, tenant, job_id, self._lease_s, self._owner
            )
        return status.endswith(" 1")

    async def _next_page(self, tenant: str, job_id: str) -> bool:
        """Claim and requeue the next page of items; False when none is left."""
        async with self._pool.acquire() as connection:
            job = await connection.fetchrow(
                "select destination_id, destination_generation from recoveries"
                " where tenant = $1 and id = $2",
                tenant, job_id,
            )  # fmt: skip
            items = await connection.fetch(PAGE, tenant, job_id, PAGE_ITEMS)
            if not items:
                return False
            self._check_destination(tenant, job)
            records = await self._claimed(connection, tenant, job_id, job, items)
        try:
            await requeue.send(self._producer, [record for _, record in records])
        except KafkaError:
            await self._release(tenant, [record for _, record in records])
            raise
        async with self._pool.acquire() as connection:
            await connection.execute(MARK, tenant, job_id, [seq for seq, _ in records], "requeued")
        return True

    def _check_destination(self, tenant: str, job: asyncpg.Record) -> None:
        """Go on only while the destination is this life of its id and not disabled."""
        destination = self._view.get(tenant, job["destination_id"])
        generation = job["destination_generation"]
        if destination is None or destination.get("generation") != generation:
            raise RecoveryStopped("The destination was deleted.")
        if destination["status"] == "inactive":
            raise RecoveryStopped("The destination was disabled.")

    async def _claimed(
        self,
        connection: asyncpg.Connection,
        tenant: str,
        job_id: str,
        job: asyncpg.Record,
        items: list[asyncpg.Record],
    ) -> list[tuple[int, requeue.Record]]:
        """The page's records to send, in order: items claimed now or by an earlier run
        (marked `claimed` in the same transaction as their claim); the others skipped."""
        destinations = {job["destination_id"]: job["destination_generation"]}
        records: list[tuple[int, requeue.Record]] = []
        skipped: list[int] = []
        claimed: list[int] = []
        async with connection.transaction():
            for item in items:
                if item["destination_id"] is None or item["id"] is None:  # swept by retention
                    skipped.append(item["seq"])
                    continue
                if item["state"] == "queued":
                    taken = await chains.claim(
                        connection, tenant, item["id"], destinations, ("failed",)
                    )
                    if item["delivery_id"] not in taken.previous:  # no longer failed
                        skipped.append(item["seq"])
                        continue
                    claimed.append(item["seq"])
                delivery = {"id": item["delivery_id"], "destination_id": item["destination_id"]}
                record = requeue.from_index(
                    delivery, present_event(item), tenant, job["destination_generation"],
                    asked_now=False,
                )  # fmt: skip
                records.append((item["seq"], record))
            await connection.execute(MARK, tenant, job_id, skipped, "skipped")
            await connection.execute(MARK, tenant, job_id, claimed, "claimed")
        return records

    async def _release(self, tenant: str, records: list[requeue.Record]) -> None:
        """Put back `failed` for the page's deliveries, whose records may not have been
        sent (the job fails: a later recovery takes them again)."""
        async with self._pool.acquire() as connection:
            for head, _ in records:
                await connection.execute(chains.RELEASE, tenant, head["id"], "failed")

    async def _finish(self, tenant: str, job_id: str, status: str, error: str | None) -> None:
        with contextlib.suppress(*DATABASE_ERRORS):
            async with self._pool.acquire() as connection:
                await connection.execute(FINISH, tenant, job_id, status, error)
        log.info("recovery %s %s", job_id, status)


class RecoveryStopped(Exception):
    """The job cannot go on (its destination was deleted or disabled); `str` says why."""
