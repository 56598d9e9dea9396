"""A source that is a queue on the platform's RabbitMQ.

Messages arrive with a prefetch of the source's max_batch; whatever has arrived (at least
one) is handed to the Ingester as one batch, and once it returns (every record durable in
Herald's `events` or rejects topic) the batch's last message is acknowledged with
`multiple`, which acknowledges the whole batch. A process killed in between leaves them
unacknowledged, and RabbitMQ delivers them again.
"""

from __future__ import annotations

import asyncio
from operator import attrgetter
from typing import Any
from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import AMQPException, ChannelInvalidStateError

from api.sources.ingest import Ingester, SourceReader
from api.sources.reconnect import Reconnecting
from pipeline.source_settings import RabbitMQSource

# How often a consumer waiting for messages checks that its channel is still open.
IDLE_CHECK_S = 1.0


class ChannelClosed(Exception):
    """The channel closed under a waiting consumer (the broker went away)."""


class RabbitMQSourceConsumer(Reconnecting):
    """Consumes one RabbitMQ source for the ingest role (api/sources/worker.py)."""

    # ChannelInvalidStateError (a RuntimeError): the ack of a batch whose channel closed
    # while it was ingested (the connection dropped, or RabbitMQ's consumer_timeout passed);
    # RabbitMQ delivers the batch again.
    failures = (
        AMQPException,
        ChannelInvalidStateError,
        OSError,
        asyncio.TimeoutError,
        ChannelClosed,
    )

    def __init__(self, source: RabbitMQSource, ingester: Ingester) -> None:
        assert source.url is not None  # the settings require it
        self._url = source.url.get_secret_value()
        password = urlsplit(self._url).password
        super().__init__(source.name, [self._url, *([password] if password else [])])
        self.source = source
        self._ingester = ingester
        self._connection: AbstractConnection | None = None
        self._reader = SourceReader(source, attrgetter("body"), self._position)

    def _position(self, message: AbstractIncomingMessage) -> dict[str, Any]:
        return {"queue": self.source.queue, "message_id": message.message_id}

    async def reachable(self) -> bool:
        """/readyz: connected now."""
        connection = self._connection
        return connection is not None and not connection.is_closed

    async def connect_and_consume(self) -> None:
        """Connect, consume the queue (it must exist) and ingest batch after batch."""
        connection = await aio_pika.connect(self._url)
        try:
            self._connection = connection
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self.source.max_batch)
            queue = await channel.get_queue(self.source.queue, ensure=True)
            inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
            await queue.consume(inbox.put)
            self.connected()
            while True:
                await self._batch(channel, inbox)
        finally:
            self._connection = None
            await connection.close()

    async def _batch(
        self, channel: AbstractChannel, inbox: asyncio.Queue[AbstractIncomingMessage]
    ) -> None:
        try:
            first = await asyncio.wait_for(inbox.get(), IDLE_CHECK_S)
        except TimeoutError:
            if channel.is_closed:
                raise ChannelClosed(self.source.queue) from None
            return
        messages = [first]
        while len(messages) < self.source.max_batch and not inbox.empty():
            messages.append(inbox.get_nowait())
        await self._ingester.ingest(self._reader, messages)
        await messages[-1].ack(multiple=True)
