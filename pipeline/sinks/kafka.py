"""Kafka sink: each delivery is one record on the customer's topic, acknowledged by all ISRs.

The key is the event id (so one event's retries land on one partition); headers carry the
delivery id, event type and creation time. With `username` and `password` the producer
speaks SASL (PLAIN unless `sasl_mechanism` says SCRAM) over TLS; without them, plaintext.

Failures, most specific first (see `_FAILURES`):

    AddressRefused                                        → PermanentError
    topic missing or invalid, topic/cluster authorization
    refused, SASL refused, record too large               → PermanentError
    bootstrap failed, broker timeouts, leader moves,
    any other KafkaError, DNS or socket errors, timeout   → RetryableError

Every connection, to a bootstrap server or to a broker the cluster metadata names, goes
to an address resolved and checked just before (kafka_pinned.py); a refused one makes the
attempt fail permanently.

A missing topic is permanent: the broker does not create topics on demand, and the producer
has already waited a full request timeout for the topic to appear in the metadata, so the
destination names a topic that does not exist. A SASL refusal during bootstrap reaches us
as "unable to bootstrap" (aiokafka tries the next server) and is therefore retryable.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import Iterator
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.helpers import create_ssl_context

from pipeline.outbound import AddressRefused
from pipeline.settings import Settings
from pipeline.sinks.base import (
    Config,
    Credentials,
    DeliveryError,
    DeliveryResult,
    PermanentError,
    Publisher,
    RetryableError,
    Target,
)
from pipeline.sinks.fields import FieldErrors, config_object, string, unknown_fields
from pipeline.sinks.http_common import checked_addresses
from pipeline.sinks.kafka_pinned import PinnedConnections, pin_connections

TOPIC = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9._-]{1,249}$")
HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")
MAX_SERVERS = 16
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
BOOTSTRAP_HELP = "must be a list of host:port (a comma-separated string or an array)"


def parse_servers(value: Any) -> list[tuple[str, int]] | None:
    """`host:port,...` or ["host:port", ...] as (host, port) pairs; None if malformed."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not 0 < len(items) <= MAX_SERVERS:
        return None
    servers = []
    for item in items:
        if not isinstance(item, str):
            return None
        host, _, port = item.strip().rpartition(":")
        if not HOST.match(host) or not port.isdigit() or not 0 < int(port) < 65536:
            return None
        servers.append((host.strip("[]"), int(port)))
    return servers


def _joined(servers: list[tuple[str, int]]) -> str:
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in servers)


class KafkaPublisher:
    """One producer per destination, started on the first publish and reused."""

    def __init__(self, target: Target, settings: Settings) -> None:
        servers = parse_servers(target.config["bootstrap_servers"])
        if servers is None:  # validated on create; a stored record is never like this
            raise PermanentError("kafka.bootstrap_servers is not usable")
        self._servers = servers
        self._topic: str = target.config["topic"]
        self._sasl_mechanism: str = target.config.get("sasl_mechanism") or "PLAIN"
        self._credentials = target.credentials
        self._settings = settings
        self._lock = asyncio.Lock()
        self._producer: AIOKafkaProducer | None = None
        self._connections = PinnedConnections(settings)
        self._checked_brokers: frozenset[tuple[str, int]] = frozenset()

    async def publish(self, delivery_id: str, event: dict[str, Any], body: bytes) -> DeliveryResult:
        headers = [
            ("delivery_id", delivery_id.encode()),
            ("event_id", str(event.get("id", "")).encode()),
            ("event_type", str(event.get("type", "")).encode()),
            ("created_at", str(event.get("created_at", "")).encode()),
        ]
        self._connections.refused = None
        # The producer bounds each step by its request timeout; this is the backstop.
        with _map_errors(self._connections):
            async with asyncio.timeout(self._settings.delivery_timeout_s * 2 + 1):
                producer = await self._started()
                await self._check_brokers(producer)
                await producer.send_and_wait(
                    self._topic, body, key=str(event.get("id", "")).encode(), headers=headers
                )
        return DeliveryResult()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is not None:
                return self._producer
            producer = self._new_producer()
            # Every connection, to the bootstrap servers and to each broker the metadata
            # names, goes to an address checked just before (kafka_pinned.py).
            pin_connections(producer.client, self._connections)
            started = False
            try:
                await producer.start()
                started = True
            finally:
                if not started:
                    await producer.stop()
            self._producer = producer
            return producer

    def _new_producer(self) -> AIOKafkaProducer:
        sasl: dict[str, Any] = {}
        if self._credentials.get("username"):
            sasl = {
                "security_protocol": "SASL_SSL",
                "ssl_context": create_ssl_context(),
                "sasl_mechanism": self._sasl_mechanism,
                "sasl_plain_username": self._credentials["username"],
                "sasl_plain_password": self._credentials["password"],
            }
        return AIOKafkaProducer(
            bootstrap_servers=[f"{h}:{p}" for h, p in self._servers],
            acks="all",
            request_timeout_ms=int(self._settings.delivery_timeout_s * 1000),
            client_id="herald",
            **sasl,
        )

    async def _check_brokers(self, producer: AIOKafkaProducer) -> None:
        """Fail fast when the metadata advertises a broker the policy refuses (the pinned
        connections refuse it anyway, but only after aiokafka's request timeout)."""
        brokers = frozenset((b.host, b.port) for b in producer.client.cluster.brokers())
        if brokers <= self._checked_brokers:
            return
        for host, port in brokers - self._checked_brokers:
            await checked_addresses(host, port, self._settings)
        self._checked_brokers = brokers

    async def close(self) -> None:
        """Stop the producer (flushing nothing: every publish awaited its ack)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


# (exception types, error class, message), most specific first. `{name}` is the class name.
_FAILURES: tuple[tuple[tuple[type[BaseException], ...], type[DeliveryError], str], ...] = (
    ((AddressRefused,), PermanentError, "broker address refused by the outbound policy"),
    (
        (kafka_errors.UnknownTopicOrPartitionError, kafka_errors.InvalidTopicError),
        PermanentError,
        "the topic does not exist on the cluster",
    ),
    (
        (
            kafka_errors.TopicAuthorizationFailedError,
            kafka_errors.ClusterAuthorizationFailedError,
            kafka_errors.SaslAuthenticationFailed,
            kafka_errors.AuthenticationFailedError,
            kafka_errors.UnsupportedSaslMechanismError,
        ),
        PermanentError,
        "the cluster refused these credentials: {name}",
    ),
    (
        (kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordTooLargeError),
        PermanentError,
        "the record is larger than the topic accepts",
    ),
    ((socket.gaierror,), RetryableError, "a broker host name does not resolve"),
    ((TimeoutError,), RetryableError, "timed out waiting for the cluster"),
    ((kafka_errors.KafkaError, OSError), RetryableError, "cluster unavailable: {name}"),
)
_SDK_ERRORS = tuple(t for types, _, _ in _FAILURES for t in types)


@contextlib.contextmanager
def _map_errors(connections: PinnedConnections) -> Iterator[None]:
    """aiokafka / socket errors → RetryableError / PermanentError, per _FAILURES; any of
    them is permanent if a broker address was refused meanwhile (aiokafka swallows the
    refusal and reports an unreachable cluster).

    aiokafka's messages name hosts and topics, never the SASL password.
    """
    try:
        yield
    except (RetryableError, PermanentError):
        raise
    except _SDK_ERRORS as exc:
        if connections.refused is not None:
            raise PermanentError(_FAILURES[0][2]) from connections.refused
        kind, message = next((k, m) for types, k, m in _FAILURES if isinstance(exc, types))
        raise kind(message.format(name=type(exc).__name__)) from exc


class KafkaSink:
    """Validates `kafka` config objects and opens one producer per destination."""

    type = "kafka"

    def validate(
        self, raw: Any, errors: FieldErrors, path: str, settings: Settings
    ) -> tuple[Config, Credentials]:
        """`bootstrap_servers` and `topic` (required); SASL `username` and `password`
        (write-only, both or neither) and `sasl_mechanism` (PLAIN unless given)."""
        raw = config_object(errors, raw, path, self.type)
        known = ("bootstrap_servers", "topic", "username", "password", "sasl_mechanism")
        unknown_fields(errors, raw, path, known)
        config: Config = {"bootstrap_servers": None, "topic": None}
        servers = parse_servers(raw.get("bootstrap_servers"))
        if raw.get("bootstrap_servers") is None:
            errors.add(f"{path}.bootstrap_servers", "is required.")
        elif servers is None:
            errors.add(f"{path}.bootstrap_servers", f"{BOOTSTRAP_HELP}, at most {MAX_SERVERS}.")
        else:
            config["bootstrap_servers"] = _joined(servers)
        topic = string(errors, raw, path, "topic", max_length=249)
        if topic is not None and not TOPIC.match(topic):
            errors.add(f"{path}.topic", "must be 1-249 of A-Z a-z 0-9 . _ - (not . or ..).")
        config["topic"] = topic
        credentials = _sasl(errors, raw, path, config)
        return config, credentials

    async def open(self, target: Target, settings: Settings) -> Publisher:
        """A publisher whose producer starts on its first publish (no network I/O here)."""
        return KafkaPublisher(target, settings)

    async def aclose(self) -> None:
        """Nothing process-wide: every publisher owns its producer."""


def _sasl(errors: FieldErrors, raw: dict[str, Any], path: str, config: Config) -> Credentials:
    credentials: Credentials = {}
    for name in ("username", "password"):
        value = string(errors, raw, path, name, required=False)
        if value is not None:
            credentials[name] = value
    if len(credentials) == 1:
        missing = "password" if "username" in credentials else "username"
        errors.add(f"{path}.{missing}", "is required with SASL: give username and password.")
    mechanism = raw.get("sasl_mechanism")
    if mechanism is not None:
        if mechanism not in SASL_MECHANISMS:
            errors.add(f"{path}.sasl_mechanism", f"must be one of: {', '.join(SASL_MECHANISMS)}.")
        elif not credentials:
            errors.add(f"{path}.sasl_mechanism", "needs a username and password.")
        else:
            config["sasl_mechanism"] = mechanism
    return credentials


SINK = KafkaSink()
