"""One batch of a source's records into `events`, or the rejects topic, durably.

Called by each source's consumer (kafka.py, rabbitmq.py) with the records it took; returns
once every record is acknowledged by Herald's broker (acks=all) in `events` (valid) or the
rejects topic (invalid, with why), so the caller may then commit or acknowledge them all.
What Herald's broker did not take is sent again (see `_durably`); after `broker_give_up_s`
of refusals HeraldUnavailable is raised and the process restarts, its source positions
uncommitted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from api.acceptance import accept
from api.errors import validation_body
from api.publishing import Outcome, publish_each
from api.stable_ids import IdSource
from pipeline import metrics
from pipeline.settings import Settings
from pipeline.source_settings import SourceSettings
from pipeline.timeutil import now_iso
from pipeline.view import DestinationView

log = logging.getLogger(__name__)

TenantExists = Callable[[str], bool]
Item = TypeVar("Item")
Send = Callable[[list[Item]], Awaitable[list["Outcome"]]]
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0
TENANT_FIELD = "tenant"


class HeraldUnavailable(Exception):
    """Herald's own broker refused a batch for longer than broker_give_up_s."""


# How a consumer's records are read: the bytes of one (None is b""), and where it came from
# (a reject says so: `{"topic", "partition", "offset"}`, `{"queue", "message_id"}`). The
# consumer's own record objects are passed as they are, so a batch costs no object per record.
Record = Any
ValueOf = Callable[[Record], bytes | None]
PositionOf = Callable[[Record], dict[str, Any]]


@dataclass(frozen=True)
class SourceReader:
    """A source and how its consumer's records are read."""

    source: SourceSettings
    value_of: ValueOf
    position_of: PositionOf


@dataclass(frozen=True)
class Rejection:
    """Why a record was not accepted: a bounded `reason` (the metric's label) and the
    errors by dotted field, as the API's 400 lists them."""

    reason: str
    errors: dict[str, list[str]]


class Ingester:
    """Validates and produces the records of every source of one process."""

    def __init__(
        self,
        settings: Settings,
        view: DestinationView,
        producer: AIOKafkaProducer,
        tenant_exists: TenantExists,
    ) -> None:
        self._settings = settings
        self._view = view
        self._producer = producer
        self._tenant_exists = tenant_exists

    async def ingest(self, reader: SourceReader, records: Sequence[Record]) -> None:
        """Produce `records` (valid ones to `events`, the others to the rejects topic) and
        return once all are acknowledged; raises HeraldUnavailable if they cannot be."""
        source, value_of = reader.source, reader.value_of
        now, ids = now_iso(), IdSource()
        valid: list[tuple[Record, dict[str, Any]]] = []
        rejected: list[tuple[Record, Rejection]] = []
        for record in records:
            event, rejection = self.check(source, value_of(record) or b"", ids, now)
            if event is not None:
                valid.append((record, event))
            else:
                assert rejection is not None
                rejected.append((record, rejection))
        too_large = await self._durably(source, valid, self._publish)
        rejected += [(record, TOO_LARGE) for record, _ in too_large]
        await self._durably(source, rejected, lambda items: self._reject(reader, items, now))
        _count(source.name, len(valid) - len(too_large), rejected)

    def check(
        self, source: SourceSettings, value: bytes, ids: IdSource, now: str
    ) -> tuple[dict[str, Any] | None, Rejection | None]:
        """A record's event, or why not. The body is a `POST /v2/events` body plus the
        tenant: its own `tenant` field, else the source's default_tenant."""
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return None, Rejection("not_json", {"body": [NOT_JSON]})
        tenant = body.pop(TENANT_FIELD, None)  # null, as absent: the source's default
        if tenant is None:
            tenant = source.default_tenant
        tenant_errors = self._tenant_errors(tenant)
        event, errors = accept(body, str(tenant), self._settings.max_event_bytes, ids, now)
        if errors or tenant_errors:
            reason = "invalid" if errors else "tenant"
            return None, Rejection(reason, {**tenant_errors, **(errors or {})})
        return event, None

    def _tenant_errors(self, tenant: Any) -> dict[str, list[str]]:
        if tenant is None:
            return {TENANT_FIELD: ["is required: this source has no default_tenant."]}
        if not isinstance(tenant, str) or not self._tenant_exists(tenant):
            return {TENANT_FIELD: ["must name a tenant of this Herald (not a deleted one)."]}
        return {}

    async def _publish(self, valid: list[tuple[Record, dict[str, Any]]]) -> list[Outcome]:
        return await publish_each(self._view, self._producer, [event for _, event in valid])

    async def _reject(
        self, reader: SourceReader, rejected: list[tuple[Record, Rejection]], now: str
    ) -> list[Outcome]:
        source = reader.source
        topic = source.rejects_topic or self._settings.sources_rejects_topic
        key = source.name.encode()
        outcomes: list[Outcome] = []
        try:
            sent = [
                await self._producer.send(topic, reject_record(reader, r, why, now), key=key)
                for r, why in rejected
            ]
        except KafkaError as exc:
            return [exc] * len(rejected)
        for future in sent:
            try:
                await future
            except KafkaError as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return outcomes

    async def _durably(
        self, source: SourceSettings, items: list[Item], send: Send[Item]
    ) -> list[Item]:
        """`send` the items, then again those the broker did not take, until none is left;
        the items too large for the topic (not sent again).

        Items sent again keep their event ids: a copy the broker did take before is a
        duplicate only for an event without a publisher-chosen id (at-least-once), as for
        an API client retrying a 503.
        """
        give_up_at = time.monotonic() + self._settings.broker_give_up_s
        delay_s = RETRY_FIRST_S
        pending, too_large = items, []
        while pending:
            outcomes = await send(pending)
            too_large += [
                item
                for item, outcome in zip(pending, outcomes, strict=True)
                if isinstance(outcome, MessageSizeTooLargeError)
            ]
            pending = [
                item
                for item, outcome in zip(pending, outcomes, strict=True)
                if outcome is not None and not isinstance(outcome, MessageSizeTooLargeError)
            ]
            if not pending:
                break
            if time.monotonic() >= give_up_at:
                raise HeraldUnavailable(f"Herald's broker refused source {source.name}'s batch")
            log.warning(
                "source %s: Herald's broker did not take %d records; sending again in %.1f s",
                source.name,
                len(pending),
                delay_s,
            )
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, RETRY_MAX_S)
        return too_large


NOT_JSON = "must be a JSON object: the body of POST /v2/events, with its tenant."
# A reject holds at most this much of its record and this many fields' errors, so it fits
# in the rejects topic whatever came (a reject the broker refuses as too large would stop
# its source).
MAX_RECORD_BYTES = 64 * 1024
MAX_FIELDS = 100
TOO_LARGE = Rejection("too_large", {"data": ["is more than the events topic takes."]})


def reject_record(reader: SourceReader, record: Record, why: Rejection, now: str) -> bytes:
    """The rejects topic's record: the source, where the record came from, why (the 400
    body's shape, its traceId the source's name), and the record as it came."""
    value = reader.value_of(record) or b""
    return orjson.dumps(
        {
            "source": reader.source.name,
            "position": reader.position_of(record),
            "reason": why.reason,
            "error": validation_body(
                dict(itertools.islice(why.errors.items(), MAX_FIELDS)), reader.source.name
            ),
            "record": value[:MAX_RECORD_BYTES].decode("utf-8", errors="replace"),
            "record_truncated": len(value) > MAX_RECORD_BYTES,
            "rejected_at": now,
        }
    )


def _count(source: str, ingested: int, rejected: list[tuple[Record, Rejection]]) -> None:
    metrics.SOURCE_RECORDS.labels(source=source, outcome="ingested").inc(ingested)
    metrics.SOURCE_RECORDS.labels(source=source, outcome="rejected").inc(len(rejected))
    for _, why in rejected:
        metrics.SOURCE_REJECTS.labels(source=source, reason=why.reason).inc()
