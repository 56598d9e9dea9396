"""Reads from the PostgreSQL index: events, deliveries and attempts, newest first."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from api.errors import RequestValidationError, unavailable
from pipeline.db import DATABASE_ERRORS

# `canceled`: never to be attempted (again): its destination was deleted or disabled.
DELIVERY_STATUSES = ("pending", "retrying", "succeeded", "failed", "canceled")


def iso(value: datetime | None) -> str | None:
    """A timestamp as the API writes it (UTC, milliseconds, Z)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def page_limit(request: web.Request) -> int:
    """`?limit=`: 1 to 100, default 20."""
    raw = request.query.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise RequestValidationError({"limit": ["must be an integer from 1 to 100."]})
    return int(raw)


def query_time(request: web.Request, name: str) -> datetime | None:
    """Query parameter `name` as an ISO 8601 timestamp (UTC if it names no zone), or None;
    400 naming it if it is not one."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise RequestValidationError({name: ["must be an ISO 8601 timestamp."]}) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _indexed_after(request: web.Request) -> int | None:
    raw = request.query.get("indexed_after")
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,18}", raw):
        raise RequestValidationError(
            {"indexed_after": ["must be 0 or the next_cursor of an indexed_after list."]}
        )
    return int(raw)


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """An opaque cursor: the sort key of the last row of a page."""
    return base64.urlsafe_b64encode(orjson.dumps([created_at.isoformat(), row_id])).decode()


def _cursor(request: web.Request) -> tuple[datetime, str] | None:
    raw = request.query.get("cursor")
    if not raw:
        return None
    try:
        created_at, row_id = orjson.loads(base64.urlsafe_b64decode(raw))
        return datetime.fromisoformat(created_at), str(row_id)
    except (ValueError, TypeError) as exc:
        raise RequestValidationError({"cursor": ["is not a valid cursor."]}) from exc


class Query:
    """A keyset-paginated query: `where` clauses with numbered parameters."""

    def __init__(self, table: str, columns: str) -> None:
        self._table = table
        self._columns = columns
        self._where: list[str] = []
        self.params: list[Any] = []
        # Set by `indexed_after`: the rows the index wrote after this point, oldest first.
        self.indexed_after: int | None = None

    def where(self, clause: str, *values: Any) -> Query:
        """Add `clause`, whose `$?` marks are numbered in order."""
        for value in values:
            self.params.append(value)
            clause = clause.replace("$?", f"${len(self.params)}", 1)
        self._where.append(clause)
        return self

    def filters(self, request: web.Request) -> Query:
        """The common created_after / created_before / cursor filters of a list request."""
        after, before, cursor = (
            query_time(request, "created_after"),
            query_time(request, "created_before"),
            _cursor(request),
        )
        if after is not None:
            self.where("created_at > $?", after)
        if before is not None:
            self.where("created_at < $?", before)
        if cursor is not None:
            self.where("(created_at, id) < ($?, $?)", *cursor)
        self._in_index_order(_indexed_after(request), cursor is not None)
        return self

    def _in_index_order(self, after: int | None, paging: bool) -> None:
        if after is None:
            return
        if paging:
            raise RequestValidationError(
                {"cursor": ["cannot be combined with indexed_after (pass next_cursor there)."]}
            )
        self.indexed_after = after
        self.where("indexed_seq > $?", after)

    def sql(self, limit: int) -> str:
        """The statement, fetching one row more than a page to know if there is more."""
        where = " and ".join(self._where) or "true"
        columns, order = self._columns, "created_at desc, id desc"
        if self.indexed_after is not None:
            columns, order = f"{columns}, indexed_seq", "indexed_seq"
        return (
            f"select {columns} from {self._table} where {where} "  # noqa: S608 - constants and numbered parameters only
            f"order by {order} limit {int(limit) + 1}"
        )


async def fetch_page(
    pool: asyncpg.Pool, query: Query, limit: int
) -> tuple[list[asyncpg.Record], str | None, bool]:
    """A page of rows, the cursor of the next page and whether there are more rows now.

    Newest first, the cursor is None on the last page. In index order (`indexed_after`) it
    is never None: it is where the next poll starts, once this one has read everything.
    """
    try:
        async with pool.acquire() as connection:
            rows = await connection.fetch(query.sql(limit), *query.params)
    except DATABASE_ERRORS as exc:
        raise unavailable("The delivery log is unreachable right now.") from exc
    page, more = list(rows[:limit]), len(rows) > limit
    if query.indexed_after is not None:
        return page, str(page[-1]["indexed_seq"] if page else query.indexed_after), more
    if not more:
        return page, None, False
    last = page[-1]
    return page, encode_cursor(last["created_at"], last["id"]), True


async def fetch_one(pool: asyncpg.Pool, sql: str, *params: Any) -> asyncpg.Record | None:
    """One row, or None."""
    try:
        async with pool.acquire() as connection:
            row: asyncpg.Record | None = await connection.fetchrow(sql, *params)
            return row
    except DATABASE_ERRORS as exc:
        raise unavailable("The delivery log is unreachable right now.") from exc


async def fetch_all(pool: asyncpg.Pool, sql: str, *params: Any) -> list[asyncpg.Record]:
    """Every row."""
    try:
        async with pool.acquire() as connection:
            return list(await connection.fetch(sql, *params))
    except DATABASE_ERRORS as exc:
        raise unavailable("The delivery log is unreachable right now.") from exc


def present_event(row: asyncpg.Record) -> dict[str, Any]:
    """An event row as the API shows it (the envelope a webhook receives)."""
    data = row["data"]
    return {
        "id": row["id"],
        "object": "event",
        "type": row["type"],
        "data": orjson.loads(data) if isinstance(data, str) else data,
        "created_at": iso(row["created_at"]),
    }


def present_event_shown(row: asyncpg.Record) -> dict[str, Any]:
    """An event row as the events routes show it: the envelope and its `ordering_key`
    (which the receiver's body does not carry)."""
    return {**present_event(row), "ordering_key": row["ordering_key"]}


def present_delivery(row: asyncpg.Record) -> dict[str, Any]:
    """A delivery row as the API shows it."""
    return {
        "id": row["id"],
        "object": "event_delivery",
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "destination_id": row["destination_id"],
        "status": row["status"],
        "attempt_count": row["attempts"],
        "last_attempt_at": iso(row["last_attempt_at"]),
        "next_attempt_at": iso(row["next_attempt_at"]),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def present_attempt(row: asyncpg.Record) -> dict[str, Any]:
    """An attempt row as the API shows it."""
    return {
        "id": row["id"],
        "object": "event_delivery_attempt",
        "attempt": row["attempt"],
        "outcome": row["outcome"],
        "response_status": row["response_status"],
        "latency_ms": row["latency_ms"],
        "error": row["error"],
        "response_body": row["response_body"],
        "created_at": iso(row["created_at"]),
    }
