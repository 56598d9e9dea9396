"""`herald dlq list|show|redrive`: the dead-letter topic for an operator, without Kafka tools.

`scan` reads `deliveries.dlq` once from end to end (or from `--since`, by the records'
broker timestamps) with a group-less consumer, so it commits nothing and disturbs no
one; each command filters what it reads by tenant, destination and event type. `redrive`
puts matching dead letters back on `deliveries` like a recovery does (api/requeue.py),
each after claiming it in the index (api/chains.py): one that is no longer `failed` there
(retried, recovered or redriven since) is skipped, so a redrive run twice sends nothing
twice. Only heads are printed, and a bounded excerpt of a body: records hold no
credentials (those are sealed in the destination record), and errors are the runner's
summaries (`dead_letter_reason`).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from api import chains, requeue
from pipeline import delivery_record
from pipeline.db import DATABASE_ERRORS, create_pool
from pipeline.settings import Settings
from pipeline.topics import DLQ

BODY_EXCERPT_BYTES = 1024
FETCH_TIMEOUT_MS = 1000
Out = Callable[[str], None]


@dataclass(frozen=True)
class Filters:
    """Which dead letters a command takes; None: any."""

    tenant: str | None = None
    destination: str | None = None
    event_type: str | None = None  # exact, or a prefix pattern such as `order.*`
    since: datetime | None = None

    def match(self, record: dict[str, Any]) -> bool:
        """Whether a decoded dead letter passes every filter given."""
        event_type = str(record.get("event", {}).get("type", ""))
        wanted = self.event_type
        return (
            self.tenant in (None, record.get("tenant"))
            and self.destination in (None, record.get("destination_id"))
            and (
                wanted is None
                or event_type == wanted
                or (wanted.endswith(".*") and event_type.startswith(wanted[:-1]))
            )
        )


async def scan(bootstrap: str, filters: Filters) -> AsyncIterator[dict[str, Any]]:
    """Every matching dead letter now in the topic (from `since`), partition by partition
    up to the end offsets read at the start; records that do not decode are passed over."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        # Where a partition without an explicit seek starts: never at its end (the default),
        # which a reset racing the seek could otherwise leave it at, reading nothing.
        auto_offset_reset="earliest",
        client_id="herald-dlq",
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # learn every topic's partitions
        known = consumer.partitions_for_topic(DLQ)
        if not known:
            raise SystemExit(f"topic {DLQ!r} does not exist: run `herald topics apply`")
        partitions = [TopicPartition(DLQ, p) for p in sorted(known)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await _seek(consumer, partitions, filters.since, ends)
        left = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while left:
            batches = await consumer.getmany(*left, timeout_ms=FETCH_TIMEOUT_MS)
            for tp, records in batches.items():
                for message in records:
                    if message.offset >= ends[tp] or message.value is None:
                        continue
                    try:
                        record = delivery_record.decode(message.value)
                    except (ValueError, KeyError, TypeError):
                        continue
                    if filters.match(record):
                        yield record
            left = {tp for tp in left if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()


async def _seek(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    since: datetime | None,
    ends: dict[TopicPartition, int],
) -> None:
    if since is None:
        await consumer.seek_to_beginning(*partitions)
        return
    found = await consumer.offsets_for_times(
        {tp: int(since.timestamp() * 1000) for tp in partitions}
    )
    for tp in partitions:
        at = found.get(tp)
        consumer.seek(tp, at.offset if at is not None else ends[tp])


def line(record: dict[str, Any]) -> str:
    """One dead letter on one line: when, tenant, destination, event type, delivery id, why
    (tabs between them)."""
    return "\t".join(
        str(field)
        for field in (
            record.get("dead_lettered_at", "-"),
            record.get("tenant", "-"),
            record.get("destination_id", "-"),
            record.get("event", {}).get("type", "-"),
            record.get("id", "-"),
            _summary(record),
        )
    )


def _summary(record: dict[str, Any]) -> str:
    """Why it was dead-lettered, and the last attempt's error if the record has it (records
    written before `last_error` existed have the reason alone), on one line."""
    reason = str(record.get("dead_letter_reason", "-"))
    last_error = record.get("last_error")
    text = f"{reason}: {last_error}" if last_error else reason
    return " ".join(text.split())


async def _latest(bootstrap: str, filters: Filters, limit: int) -> list[dict[str, Any]]:
    """The newest dead letter of each matching delivery; the newest `limit` of those,
    oldest first (a delivery dead-lettered again after a retry shows once, as it is now)."""
    latest: dict[str, dict[str, Any]] = {}  # in the order of each delivery's last letter
    async for record in scan(bootstrap, filters):
        key = str(record.get("id"))
        latest.pop(key, None)
        latest[key] = record
        if len(latest) > limit:  # held in memory, bodies and all: never more than asked
            del latest[next(iter(latest))]
    return list(latest.values())


async def list_command(settings: Settings, filters: Filters, limit: int, out: Out) -> int:
    """Print the newest `limit` matching dead letters, one a line."""
    records = await _latest(settings.kafka_bootstrap, filters, limit)
    for record in records:
        out(line(record))
    out(f"{len(records)} dead letters")
    return 0


async def show_command(settings: Settings, delivery_id: str, out: Out) -> int:
    """Print the head of the delivery's newest dead letter and an excerpt of its body."""
    found = None
    async for record in scan(settings.kafka_bootstrap, Filters()):
        if record.get("id") == delivery_id:
            found = record
    if found is None:
        out(f"no dead letter of {delivery_id}")
        return 1
    body = bytes(found.pop(delivery_record.BODY))
    out(orjson.dumps(found, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    excerpt = body[:BODY_EXCERPT_BYTES].decode("utf-8", errors="replace")
    more = f" … ({len(body)} bytes in all)" if len(body) > BODY_EXCERPT_BYTES else ""
    out(f"body: {excerpt}{more}")
    return 0


async def redrive_command(
    settings: Settings, filters: Filters, limit: int, dry_run: bool, out: Out
) -> int:
    """Put the newest `limit` matching dead letters back on the delivery path, each claimed
    in the index first; print what was (or, with `dry_run`, would be) redriven."""
    records = await _latest(settings.kafka_bootstrap, filters, limit)
    if dry_run:
        for record in records:
            out(f"would redrive\t{line(record)}")
        out(f"dry run: {len(records)} dead letters would be redriven")
        return 0
    pool = await create_pool(settings.database_url, max_size=2)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        redriven, skipped = await _redrive(pool, producer, records, out)
    except DATABASE_ERRORS as exc:
        out(f"the index is unreachable ({type(exc).__name__}); nothing more was redriven")
        return 1
    finally:
        await producer.stop()
        await pool.close()
    out(f"redriven {redriven}, skipped {skipped} (no longer failed in the index)")
    return 0


async def _redrive(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, records: Iterable[dict[str, Any]], out: Out
) -> tuple[int, int]:
    redriven = skipped = 0
    for record in records:
        head, body = requeue.from_dead_letter(record)
        tenant, destination_id = str(head["tenant"]), str(head["destination_id"])
        destinations = {destination_id: head.get("destination_generation")}
        taken = await chains.claim(
            pool, tenant, str(head["event"]["id"]), destinations, ("failed",)
        )
        if head["id"] not in taken.previous:
            skipped += 1
            out(f"skipped\t{line(record)}")
            continue
        try:
            await requeue.send(producer, [(head, body)])
        except KafkaError:
            await chains.release(pool, taken)
            raise
        redriven += 1
        out(f"redriven\t{line(record)}")
    return redriven, skipped


def add_parser(commands: Any) -> None:
    """`herald dlq list|show|redrive` (api/cli.py adds it to its subcommands)."""
    dlq = commands.add_parser("dlq", help="inspect and redrive the dead-letter topic")
    actions = dlq.add_subparsers(dest="action", required=True)
    for name, help_text in (
        ("list", "print matching dead letters, one a line (the newest --limit)"),
        ("redrive", "put matching dead letters back on the delivery path"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--tenant")
        action.add_argument("--destination", help="a destination id (evtd_…)")
        action.add_argument("--type", dest="event_type", help="an event type, or a prefix: a.*")
        action.add_argument("--since", type=_since, help="RFC 3339: dead-lettered from then on")
        action.add_argument("--limit", type=_limit, default=100, help="at most this many (100)")
    actions.choices["redrive"].add_argument(
        "--dry-run", action="store_true", help="print what would be redriven, change nothing"
    )
    show = actions.add_parser("show", help="a dead letter's head and an excerpt of its body")
    show.add_argument("delivery_id")


def run(settings: Settings, args: argparse.Namespace, out: Out = print) -> int:
    """Run the `dlq` subcommand `args` asks for."""
    if args.action == "show":
        return asyncio.run(show_command(settings, args.delivery_id, out))
    filters = Filters(args.tenant, args.destination, args.event_type, args.since)
    if args.action == "list":
        return asyncio.run(list_command(settings, filters, args.limit, out))
    return asyncio.run(redrive_command(settings, filters, args.limit, args.dry_run, out))


def _since(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError("must be an RFC 3339 timestamp") from exc
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("must have a UTC offset (Z or ±hh:mm)")
    return value


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100_000:
        raise argparse.ArgumentTypeError("must be an integer from 1 to 100000")
    return int(text)
