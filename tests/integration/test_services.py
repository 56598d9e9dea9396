"""The session's PostgreSQL, RabbitMQ and Kafka are the real servers, reachable on loopback."""

from __future__ import annotations

import aio_pika
import asyncpg

from tests.integration.conftest import Services


async def test_postgresql_answers(services: Services) -> None:
    connection = await asyncpg.connect(services.database_url)
    try:
        version = await connection.fetchval("show server_version")
        assert version.split(".")[0].isdigit()
    finally:
        await connection.close()


async def test_rabbitmq_round_trip(services: Services) -> None:
    connection = await aio_pika.connect_robust(services.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True)
        await channel.default_exchange.publish(aio_pika.Message(b"ping"), routing_key=queue.name)
        message = await queue.get(timeout=5, fail=True)
        assert message is not None
        assert message.body == b"ping"
        await message.ack()
