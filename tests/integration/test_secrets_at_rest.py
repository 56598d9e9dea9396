"""Credentials at rest: never plaintext in Kafka, PostgreSQL or the logs; key rotation works.

The scan reads the raw bytes of the `destinations` and `destination-changes` topics (every
partition, from the beginning), every text-like column of every PostgreSQL table, and the
stack's log files, and looks for each credential a test destination was created with.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from api.auth import hash_key
from pipeline.crypto import Sealer, generate_key
from pipeline.topics import DESTINATION_CHANGES, DESTINATIONS
from tests.integration.api_client import Api
from tests.integration.conftest import (
    API_PORT,
    ENCRYPTION_KEY,
    Services,
    Stack,
    extra_api,
)

ROTATED_PORT = API_PORT + 4


def _token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(18)


def _private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _destinations_with_credentials() -> tuple[list[dict[str, Any]], list[str]]:
    """One create body per destination type that takes credentials, and the secrets in them."""
    webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    aws_secret, eventbridge_secret = _token("aws-"), _token("eb-")
    amqp_password, kafka_password = _token("amqp-"), _token("kafka-")
    hookdeck_key = _token("hd-")
    header_value = _token("Bearer hdr-")  # custom header values are credentials too
    hookdeck_token = base64.b64encode(f"src_secrets:{hookdeck_key}".encode()).decode()
    azure_key = base64.b64encode(secrets.token_bytes(24)).decode()
    pem = _private_key_pem()
    pem_body = "".join(pem.splitlines()[1:-1])
    bodies: list[dict[str, Any]] = [
        {
            "type": "webhook",
            "webhook": {
                "url": "https://e.example/h",
                "secret": webhook_secret,
                "custom_headers": {"Authorization": header_value},
            },
        },
        {
            "type": "aws_sqs",
            "aws_sqs": {
                "queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
                "key": "AKIAIOSFODNN7EXAMPLE",
                "secret": aws_secret,
            },
        },
        {
            "type": "aws_eventbridge",
            "aws_eventbridge": {
                "event_bus_name": "orders",
                "region": "eu-west-1",
                "access_key_id": "AKIAIOSFODNN7EXAMPLE",
                "secret_access_key": eventbridge_secret,
            },
        },
        {
            "type": "rabbitmq",
            "rabbitmq": {
                "server_url": f"amqp://app:{amqp_password}@rabbit.example:5672/",
                "exchange": "ev",
            },
        },
        {
            "type": "kafka",
            "kafka": {
                "bootstrap_servers": "kafka.example:9092",
                "topic": "events",
                "username": "app",
                "password": kafka_password,
            },
        },
        {"type": "hookdeck", "hookdeck": {"token": hookdeck_token}},
        {
            "type": "gcp_pubsub",
            "gcp_pubsub": {
                "project_id": "herald-test",
                "topic": "events",
                "service_account_json": {
                    "type": "service_account",
                    "project_id": "herald-test",
                    "private_key": pem,
                    "client_email": "herald@herald-test.iam.gserviceaccount.com",
                    "token_uri": "https://oauth2.googleapis.com/token",
                },
            },
        },
        {
            "type": "azure_servicebus",
            "azure_servicebus": {
                "name": "events",
                "connection_string": "Endpoint=sb://herald.servicebus.windows.net/;"
                f"SharedAccessKeyName=send;SharedAccessKey={azure_key}",
            },
        },
    ]
    needles = [
        webhook_secret,
        webhook_secret.removeprefix("whsec_"),
        aws_secret,
        eventbridge_secret,
        amqp_password,
        kafka_password,
        hookdeck_token,
        hookdeck_key,
        azure_key,
        header_value,
        pem_body[100:160],  # any stretch of the private key
    ]
    return bodies, needles


async def _topic_bytes(bootstrap: str, topic: str) -> bytes:
    """Every key, value and header of `topic`, concatenated, from the beginning to the end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # learn every topic's partitions
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        assert partitions, topic
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        chunks: list[bytes] = []
        while any([await consumer.position(tp) < end[tp] for tp in partitions]):
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    chunks += [record.key or b"", record.value or b""]
                    chunks += [value for _, value in record.headers]
        return b"\n".join(chunks)
    finally:
        await consumer.stop()


async def _database_text(database_url: str) -> str:
    """Every text-like column of every table in the public schema, as text."""
    connection = await asyncpg.connect(database_url)
    try:
        columns = await connection.fetch(
            "select table_name, column_name from information_schema.columns "
            "where table_schema = 'public' "
            "and data_type in ('text', 'character varying', 'json', 'jsonb', 'bytea')"
        )
        assert {c["table_name"] for c in columns} >= {"events", "idempotency_keys"}
        parts = []
        for column in columns:
            rows = await connection.fetch(
                f'select "{column["column_name"]}"::text as v '  # noqa: S608 - catalog names
                f'from "{column["table_name"]}"'
            )
            parts += [str(r["v"]) for r in rows if r["v"] is not None]
        return "\n".join(parts)
    finally:
        await connection.close()


async def test_no_plaintext_credential_at_rest(api: Api, services: Services, stack: Stack) -> None:
    bodies, needles = _destinations_with_credentials()
    created = []
    for body in bodies:
        status, response = await api.call(
            "POST", "/v2/event-destinations", {"name": "at rest", "events": ["rest.never"], **body}
        )
        assert status == 201, (body["type"], response)
        created.append(response["id"])
    # A generated secret is returned once; the idempotency record that keeps that response
    # for replays lives in PostgreSQL and must be sealed too.
    idempotency_key = _token("idem-")
    status, generated = await api.call(
        "POST",
        "/v2/event-destinations",
        {"name": "generated", "events": ["rest.never"], "webhook": {"url": "https://e.example"}},
        headers={"Idempotency-Key": idempotency_key},
    )
    assert status == 201
    needles.append(generated["webhook"]["secret"])
    created.append(generated["id"])

    raw = b"".join(
        [
            await _topic_bytes(services.kafka_bootstrap, DESTINATION_CHANGES),
            await _topic_bytes(services.kafka_bootstrap, DESTINATIONS),
        ]
    )
    database = await _database_text(services.database_url)
    logs = "\n".join(p.read_text(errors="replace") for p in stack.logs.glob("*.log"))
    # The scans saw the records they are meant to see (else an empty scan would pass).
    assert all(destination_id.encode() in raw for destination_id in created)
    assert idempotency_key in database  # the row that keeps the response with the secret
    for needle in needles:
        assert needle.encode() not in raw, "a credential is in plaintext in Kafka"
        assert needle not in database, "a credential is in plaintext in PostgreSQL"
        assert needle not in logs, "a credential is in a log"


# -- key rotation -----------------------------------------------------------------------------


NEW_KEY = generate_key()


@pytest.fixture(scope="module")
def rotated_api(services: Services, stack: Stack) -> Iterator[str]:
    """An API process with a new key first and the stack's key after it."""
    with extra_api(
        services,
        "api-rotated",
        ROTATED_PORT,
        HERALD_ENCRYPTION_KEYS=f"{NEW_KEY},{ENCRYPTION_KEY}",
    ) as url:
        yield url


async def _sealed(bootstrap: str, destination_id: str) -> str:
    """The `sealed` field of the destination's latest record in the `destinations` topic."""
    latest: dict[str, Any] = {}
    for line in (await _topic_bytes(bootstrap, DESTINATIONS)).split(b"\n"):
        if line.startswith(b"{") and f'"id":"{destination_id}"'.encode() in line:
            latest = orjson.loads(line)
    return str(latest["sealed"])


def _key_id(encoded: str) -> str:
    return Sealer(encoded).seal({}, "x").split(".")[1]


async def test_rotated_keys_open_old_records_and_seal_new_ones(
    api: Api, services: Services, stack: Stack, rotated_api: str
) -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    status, old = await api.call(
        "POST",
        "/v2/event-destinations",
        {
            "name": "sealed under the old key",
            "events": ["rotation.never"],
            "webhook": {"url": "https://e.example/old", "secret": secret},
        },
    )
    assert status == 201, old
    sealed_old = await _sealed(services.kafka_bootstrap, old["id"])
    assert sealed_old.split(".")[1] == _key_id(ENCRYPTION_KEY)
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with aiohttp.ClientSession(base_url=rotated_api, headers=headers) as session:
        rotated = Api(session)
        try:
            # A new URL keeps the credentials: the old record is opened and sealed again.
            status, body = await rotated.call(
                "PATCH",
                f"/v2/event-destinations/{old['id']}",
                {"webhook": {"url": "https://e.example/new"}},
            )
            assert status == 200, body
            fresh = await rotated.create_webhook("https://e.example/fresh", ["rotation.never"])
            resealed = await _sealed(services.kafka_bootstrap, old["id"])
            sealed_fresh = await _sealed(services.kafka_bootstrap, fresh["id"])
        finally:
            # The stack's worker holds only the old key: leave nothing sealed with the new one.
            for destination_id in (old["id"], locals().get("fresh", {}).get("id")):
                if destination_id:
                    await rotated.call("DELETE", f"/v2/event-destinations/{destination_id}")
    assert resealed.split(".")[1] == _key_id(NEW_KEY)
    assert sealed_fresh.split(".")[1] == _key_id(NEW_KEY)
    # The new key alone opens both, and the secret set under the old key survived.
    assert Sealer(NEW_KEY).open(resealed, old["id"])["secret"] == secret
    assert Sealer(NEW_KEY).open(sealed_fresh, fresh["id"])["secret"].startswith("whsec_")


async def test_response_sealed_under_a_retired_key_is_409_not_500(
    api: Api, services: Services
) -> None:
    """Found by the schema fuzzer: an idempotency record sealed under a key that is no
    longer configured made the replay raise (500). The request already ran once, so the
    answer is a 409 asking for a new key, never a second run."""
    key = _token("idem-retired-")
    body = b'{"type": "retired.key", "data": {}}'
    request_hash = hashlib.sha256(b"POST /v2/events\n" + body).hexdigest()
    api_key = hash_key(api.session.headers["Authorization"].removeprefix("Bearer "))
    sealed = Sealer(generate_key()).seal({"body": "{}"}, f"dev/{api_key}/{key}")
    connection = await asyncpg.connect(services.database_url)
    try:
        await connection.execute(
            "insert into idempotency_keys (tenant, api_key, key, request_hash, status, body) "
            "values ('dev', $1, $2, $3, 202, $4)",
            api_key,
            key,
            request_hash,
            sealed.encode(),
        )
    finally:
        await connection.close()
    async with api.session.post(
        "/v2/events",
        data=body,
        headers={"Content-Type": "application/json", "Idempotency-Key": key},
    ) as response:
        assert response.status == 409, await response.text()
        error = (await response.json())["errors"][0]
    assert (error["code"], error["field"]) == ("idempotency_key_unreadable", "Idempotency-Key")
