"""Kafka sources over SASL_SSL (issue 18): `herald worker --role ingest` reading topics
through the session broker's SASL_SSL listener (scripts/kafka/kafka.sh, its certificates
from tests/integration/broker_tls.py), verifying the broker's certificate against the test
CA given as ssl_cafile.

PLAIN (as Confluent Cloud uses), SCRAM-SHA-256 and SCRAM-SHA-512 (as MSK uses) each deliver
end to end to a real webhook receiver; a wrong password, and a CA that did not sign the
broker's certificate, leave their source degraded on /readyz with the reason in the ingest
log, and no password shows in either. Records are written over the PLAINTEXT listener: what
is under test is Herald's consumer.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.api_client import Api
from tests.integration.broker_tls import SASL_PASSWORD, SASL_USER
from tests.integration.conftest import BROKER_TLS, PORTS, Services, Stack
from tests.integration.test_sources import (
    INGEST_LOG,
    INGEST_PORT,
    _create_topics,
    _event_type,
    _send,
    _start,
    ingest_env,
    platform_topic,  # noqa: F401 (a fixture: the records are written over PLAINTEXT)
)
from tests.support import Receiver, eventually

WRONG_PASSWORD = "wrong-sasl-password-that-never-shows"
# The sources that must deliver: name -> SASL mechanism.
MECHANISMS = {"plain": "PLAIN", "scram256": "SCRAM-SHA-256", "scram512": "SCRAM-SHA-512"}


@dataclass(frozen=True)
class TlsIngest:
    """The module's ingest process: its URL and each source's topic."""

    url: str
    topics: dict[str, str]


def _source(name: str, topic: str, mechanism: str, password: str, ca_file: Path) -> dict[str, Any]:
    return {
        "name": name,
        "type": "kafka",
        "bootstrap_servers": f"127.0.0.1:{PORTS.kafka_sasl_ssl}",
        "topic": topic,
        "default_tenant": "dev",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_username": SASL_USER,
        "sasl_password": password,
        "ssl_cafile": str(ca_file),
    }


@pytest.fixture(scope="module")
def tls_ingest(services: Services, stack: Stack) -> Iterator[TlsIngest]:
    tag = uuid.uuid4().hex[:8]
    topics = {name: f"platform-tls-{name}-{tag}" for name in MECHANISMS}
    asyncio.run(_create_topics(services.kafka_bootstrap, *topics.values()))
    sources = [
        _source(name, topics[name], mechanism, SASL_PASSWORD, BROKER_TLS.ca_file)
        for name, mechanism in MECHANISMS.items()
    ]
    sources += [
        _source("wrong-password", topics["plain"], "PLAIN", WRONG_PASSWORD, BROKER_TLS.ca_file),
        _source(
            "stranger-ca", topics["plain"], "PLAIN", SASL_PASSWORD, BROKER_TLS.stranger_ca_file
        ),
    ]
    INGEST_LOG.unlink(missing_ok=True)
    process = _start(ingest_env(stack, sources))
    try:
        yield TlsIngest(f"http://127.0.0.1:{INGEST_PORT}", topics)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("name", list(MECHANISMS))
async def test_a_sasl_ssl_source_delivers_end_to_end(
    name: str,
    tls_ingest: TlsIngest,
    platform_topic: AIOKafkaProducer,  # noqa: F811 (the fixture imported above)
    api: Api,
    receiver: Receiver,
) -> None:
    event_type = _event_type()
    await api.create_webhook(f"{receiver.url}/{name}", [event_type])
    records = [{"type": event_type, "data": {"n": n}} for n in range(10)]
    await _send(platform_topic, tls_ingest.topics[name], *records)
    await eventually(
        lambda: len(receiver.bodies(f"/{name}")) >= 10, timeout_s=60, what="10 deliveries"
    )
    assert sorted(b["data"]["n"] for b in receiver.bodies(f"/{name}")) == list(range(10))


async def _checks(url: str) -> tuple[dict[str, str], str]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as response:
        text = await response.text()
        assert response.status == 200, text  # degraded, still serving the other sources
        return json.loads(text)["checks"], text


async def test_a_wrong_password_or_a_stranger_ca_leaves_the_source_degraded(
    tls_ingest: TlsIngest,
) -> None:
    expected = {
        "kafka": "ok",
        **dict.fromkeys((f"source:{name}" for name in MECHANISMS), "ok"),
        "source:wrong-password": "degraded",
        "source:stranger-ca": "degraded",
    }

    async def settled() -> str | None:
        checks, text = await _checks(tls_ingest.url)
        return text if checks == expected else None

    text = await eventually(settled, timeout_s=60, what=f"/readyz checks {expected}")

    def refused() -> list[dict[str, Any]] | None:
        lines = [
            json.loads(line) for line in INGEST_LOG.read_text().splitlines() if line[:1] == "{"
        ]
        failed = {m.split()[1] for m in _messages(lines, "api.sources.reconnect") if "failed" in m}
        # aiokafka names the reason (Herald's line after it says the bootstrap failed).
        reasons = " ".join(_messages(lines, "aiokafka"))
        found = "CERTIFICATE_VERIFY_FAILED" in reasons and "SaslAuthenticationFailed" in reasons
        return lines if found and failed == {"wrong-password", "stranger-ca"} else None

    await eventually(refused, timeout_s=30, what="both refusals and their reasons in the log")
    log = INGEST_LOG.read_text()
    for password in (WRONG_PASSWORD, SASL_PASSWORD):
        assert password not in log
        assert password not in text


def _messages(lines: list[dict[str, Any]], logger: str) -> list[str]:
    return [line["message"] for line in lines if line["logger"] == logger]
