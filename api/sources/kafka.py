"""A source that is a Kafka topic on the platform's own cluster, read in a consumer group.

`run` consumes batches with getmany, hands each to the Ingester (the next batch is fetched
and sent while one waits for its acknowledgements) and commits a batch's offsets only once
its ingest returns (every record durable in Herald's `events` or rejects topic):
a process killed in between leaves them uncommitted, and the group reads them again.
"""

from __future__ import annotations

import asyncio
import contextlib
from operator import attrgetter
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from api.sources.ingest import Ingester, SourceReader
from api.sources.reconnect import Reconnecting
from pipeline.source_settings import KafkaSource

FETCH_TIMEOUT_MS = 1000
# Past aiokafka's defaults (50 MiB a fetch, 1 MiB a partition): a fetch round trip brings
# several batches of a busy topic, not one partition's megabyte.
FETCH_MAX_BYTES = 64 * 1024 * 1024
PARTITION_FETCH_BYTES = 8 * 1024 * 1024


def consumer_options(source: KafkaSource) -> dict[str, Any]:
    """AIOKafkaConsumer's arguments for `source`: its cluster, group, SASL and TLS."""
    options: dict[str, Any] = {
        "bootstrap_servers": source.bootstrap_servers,
        "group_id": source.group,
        "client_id": f"herald-source-{source.name}",
        "enable_auto_commit": False,
        "auto_offset_reset": source.auto_offset_reset,
        "security_protocol": source.security_protocol,
        "max_poll_records": source.max_batch,
        "fetch_max_bytes": FETCH_MAX_BYTES,
        "max_partition_fetch_bytes": PARTITION_FETCH_BYTES,
    }
    if source.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=str(source.ssl_cafile) if source.ssl_cafile else None,
            certfile=str(source.ssl_certfile) if source.ssl_certfile else None,
            keyfile=str(source.ssl_keyfile) if source.ssl_keyfile else None,
        )
    if source.security_protocol.startswith("SASL"):
        assert source.sasl_password is not None  # the settings require it
        options |= {
            "sasl_mechanism": source.sasl_mechanism,
            "sasl_plain_username": source.sasl_username,
            "sasl_plain_password": source.sasl_password.get_secret_value(),
        }
    return options


class KafkaSourceConsumer(Reconnecting):
    """Consumes one Kafka source for the ingest role (api/sources/worker.py)."""

    failures = (KafkaError, OSError, asyncio.TimeoutError)

    def __init__(self, source: KafkaSource, ingester: Ingester) -> None:
        super().__init__(source.name, _secrets(source))
        self.source = source
        self._ingester = ingester
        self._consumer: AIOKafkaConsumer | None = None
        self._reader = SourceReader(source, attrgetter("value"), _position)

    async def reachable(self) -> bool:
        """/readyz: the source's cluster answers now, and has the topic."""
        consumer = self._consumer
        return consumer is not None and self.source.topic in await consumer.topics()

    async def connect_and_consume(self) -> None:
        """Join the group and ingest batch after batch, until the cluster fails us."""
        consumer = AIOKafkaConsumer(self.source.topic, **consumer_options(self.source))
        in_flight: InFlight | None = None
        try:
            await consumer.start()
            self._consumer = consumer
            self.connected()
            while True:
                in_flight = await self._batch(consumer, in_flight)
        finally:
            self._consumer = None
            if in_flight is not None:  # never committed: the group reads it again
                in_flight[0].cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await in_flight[0]
            await consumer.stop()

    async def _batch(
        self, consumer: AIOKafkaConsumer, previous: InFlight | None
    ) -> InFlight | None:
        """Fetch a batch and start ingesting it, then wait for the previous batch to be
        durable and commit its offsets: a batch is fetched, validated and sent while the
        one before waits for its acknowledgements, and commits stay in order."""
        # With a batch in flight, take only the records fetched already; if none, commit
        # it now rather than a fetch timeout later.
        batches = await consumer.getmany(
            timeout_ms=FETCH_TIMEOUT_MS if previous is None else 0,
            max_records=self.source.max_batch,
        )
        current: InFlight | None = None
        if batches:
            records = [r for taken in batches.values() for r in taken]
            ingesting = asyncio.create_task(self._ingester.ingest(self._reader, records))
            current = (ingesting, {tp: taken[-1].offset + 1 for tp, taken in batches.items()})
        if previous is not None:
            try:
                await previous[0]
            except BaseException:
                if current is not None:  # not committed either: stop it, it is read again
                    current[0].cancel()
                raise
            await consumer.commit(previous[1])
        return current


# A batch being ingested, and the offsets to commit once it is durable.
InFlight = tuple["asyncio.Task[None]", dict[TopicPartition, int]]


def _position(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


def _secrets(source: KafkaSource) -> list[str]:
    return [source.sasl_password.get_secret_value()] if source.sasl_password else []
