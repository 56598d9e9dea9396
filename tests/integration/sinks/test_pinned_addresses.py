"""The SDK sinks connect only to addresses the outbound policy checked (issue 12, A5).

Names are served by a resolver the test controls: the running loop's `getaddrinfo`, which
both Herald's one lookup and (before the fix) the SDKs' own second lookup go through. A
"rebinding" name answers 127.0.0.1 (allowlisted) first and 127.0.0.2 (loopback, refused)
afterwards; a trap listener on 127.0.0.2 counts every connection that reaches the refused
address. The allowlist admits 127.0.0.1 only, where the session's Kafka and RabbitMQ listen.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiokafka.protocol.admin import ApiVersionResponse_v0
from aiokafka.protocol.metadata import MetadataResponse_v0

from pipeline.settings import Settings
from pipeline.sinks import azure_servicebus, load_sink
from pipeline.sinks.base import DeliveryError, PermanentError, Publisher, Target
from pipeline.sinks.fields import FieldErrors
from tests.integration.conftest import Services
from tests.integration.sinks.conformance import envelope, publish_and_read_back
from tests.integration.sinks.test_kafka import kafka_peer
from tests.integration.sinks.test_rabbitmq import rabbitmq_peer
from tests.tls_support import make_pki

SETTINGS = Settings(outbound_allowlist=["127.0.0.1/32"], delivery_timeout_s=3)
CHECKED, REFUSED = "127.0.0.1", "127.0.0.2"


class FakeDns:
    """Answers for some names, in order (the last one repeats); other names resolve as usual."""

    def __init__(self, original: Callable[..., Any]) -> None:
        self._original = original
        self._answers: dict[str, list[str]] = {}
        self.lookups: dict[str, int] = {}

    def serve(self, name: str, *answers: str) -> str:
        self._answers[name] = list(answers)
        self.lookups[name] = 0
        return name

    async def getaddrinfo(self, host: Any, port: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self._answers:
            return list(await self._original(host, port, **kwargs))
        self.lookups[name] += 1
        answers = self._answers[name]
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))]


@pytest.fixture
async def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    loop = asyncio.get_running_loop()
    fake = FakeDns(loop.getaddrinfo)
    monkeypatch.setattr(loop, "getaddrinfo", fake.getaddrinfo)
    return fake


class Trap:
    """A listener on the refused address: every connection it accepts is a policy breach."""

    def __init__(self) -> None:
        self.connections = 0

    def _accept(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


@contextlib.asynccontextmanager
async def trap_on(port: int) -> AsyncIterator[Trap]:
    trap = Trap()
    server = await asyncio.start_server(trap._accept, REFUSED, port)
    try:
        yield trap
    finally:
        server.close()
        await server.wait_closed()


async def opened(sink_type: str, raw: dict[str, Any], settings: Settings = SETTINGS) -> Publisher:
    errors = FieldErrors()
    config, credentials = load_sink(sink_type).validate(raw, errors, sink_type, settings)
    assert not errors, errors.by_field
    return await load_sink(sink_type).open(Target("evtd_pinned", config, credentials), settings)


async def assert_refused(sink_type: str, raw: dict[str, Any]) -> None:
    """A publisher for `raw` opens, and its publish is refused by the outbound policy."""
    publisher = await opened(sink_type, raw)
    try:
        with pytest.raises(PermanentError, match="outbound policy"):
            await publisher.publish(*envelope())
    finally:
        await publisher.close()


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


# --- Kafka -------------------------------------------------------------------------------


async def test_kafka_name_of_refused_address_is_refused(services: Services, dns: FakeDns) -> None:
    port = port_of(services.kafka_bootstrap)
    name = dns.serve("refused-kafka.herald.test", REFUSED)
    async with trap_on(port) as trap:
        await assert_refused("kafka", {"bootstrap_servers": f"{name}:{port}", "topic": "t"})
    assert trap.connections == 0


async def test_kafka_rebinding_name_connects_to_the_checked_address(
    services: Services, dns: FakeDns
) -> None:
    port = port_of(services.kafka_bootstrap)
    name = dns.serve("rebinding-kafka.herald.test", CHECKED, REFUSED)
    async with kafka_peer(services.kafka_bootstrap) as peer, trap_on(port) as trap:
        raw = {"bootstrap_servers": f"{name}:{port}", "topic": peer.topic}
        publisher = await opened("kafka", raw)
        _, _, body, records = await publish_and_read_back(publisher, peer.drain, "the record")
    assert [record.value for record in records] == [body]
    assert dns.lookups[name] == 1, "the name was resolved more than once"
    assert trap.connections == 0


class FakeBroker:
    """Speaks just enough Kafka (ApiVersions v0, Metadata v0) to advertise a topic whose
    leader is a broker at the refused address: the fake metadata response at the
    client's wire boundary. Produce requests never reach it."""

    def __init__(self, refused_port: int) -> None:
        self.port = 0
        self._refused_port = refused_port
        self._writers: set[asyncio.StreamWriter] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big")
                request = await reader.readexactly(size)
                api_key = int.from_bytes(request[0:2], "big")
                correlation = request[4:8]
                body = self._answer(api_key, request)
                writer.write(len(correlation + body).to_bytes(4, "big") + correlation + body)
                await writer.drain()
        writer.close()

    def _answer(self, api_key: int, request: bytes) -> bytes:
        if api_key == 18:  # ApiVersions
            return ApiVersionResponse_v0(0, [(18, 0, 0), (3, 0, 0), (0, 0, 2)]).encode()
        client_id_length = int.from_bytes(request[8:10], "big")
        topic_count = int.from_bytes(request[10 + client_id_length : 14 + client_id_length], "big")
        me = (0, CHECKED, self.port)
        if topic_count <= 0:  # the bootstrap request: no topics, only this broker
            return MetadataResponse_v0([me], []).encode()
        leader = (1, REFUSED, self._refused_port)
        return MetadataResponse_v0([me, leader], [(0, "t", [(0, 0, 1, [1], [1])])]).encode()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeBroker]:
        server = await asyncio.start_server(self._serve, CHECKED, 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for writer in self._writers:  # clients still connected: their handlers end
                writer.close()
            await server.wait_closed()


async def test_kafka_broker_from_metadata_is_checked_before_connecting() -> None:
    refused_port = free_port_on(REFUSED)
    async with trap_on(refused_port) as trap, FakeBroker(refused_port).running() as broker:
        await assert_refused(
            "kafka", {"bootstrap_servers": f"{CHECKED}:{broker.port}", "topic": "t"}
        )
    assert trap.connections == 0


def free_port_on(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --- RabbitMQ ----------------------------------------------------------------------------


async def test_rabbitmq_name_of_refused_address_is_refused(
    services: Services, dns: FakeDns
) -> None:
    port = urlsplit(services.amqp_url).port or 5672
    name = dns.serve("refused-rabbitmq.herald.test", REFUSED)
    async with rabbitmq_peer(services.amqp_url) as peer, trap_on(port) as trap:
        await assert_refused(
            "rabbitmq", {"server_url": f"{name}:{port}", "exchange": peer.exchange}
        )
    assert trap.connections == 0


@contextlib.asynccontextmanager
async def tls_proxy(context: ssl.SSLContext, upstream_port: int) -> AsyncIterator[int]:
    """A TLS listener on the checked address that forwards to RabbitMQ's plain port."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(CHECKED, upstream_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(serve, CHECKED, 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_rabbitmq_tls_rebinding_name_connects_to_the_checked_address(
    services: Services, dns: FakeDns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """amqps:// to a name: the connection goes to the address checked, and the broker's
    certificate (issued for the name only) is verified against the name."""
    name = dns.serve("rebinding-rabbitmq.herald.test", CHECKED, REFUSED)
    pki = make_pki(tmp_path, name)
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))  # the default context trusts it
    upstream = urlsplit(services.amqp_url).port or 5672
    async with (
        rabbitmq_peer(services.amqp_url) as peer,
        tls_proxy(pki.server_context, upstream) as port,
        trap_on(port) as trap,
    ):
        raw = {"server_url": f"amqps://guest:guest@{name}:{port}/", "exchange": peer.exchange}
        publisher = await opened("rabbitmq", raw)
        _, _, body, messages = await publish_and_read_back(publisher, peer.drain, "the message")
    assert [message.body for message in messages] == [body]
    assert trap.connections == 0


# --- Azure Service Bus -------------------------------------------------------------------


async def test_servicebus_sdk_dials_the_checked_address_and_verifies_the_name(
    dns: FakeDns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real SDK client: its TLS connection reaches the checked address with the
    namespace as SNI (the certificate is then refused, as no public CA issued it)."""
    name = dns.serve("rebinding.servicebus.herald.test", CHECKED, REFUSED)
    pki = make_pki(tmp_path, name)
    server_names: list[str | None] = []
    pki.server_context.sni_callback = lambda _, sni, __: server_names.append(sni)
    server = await asyncio.start_server(lambda r, w: w.close(), CHECKED, 0, ssl=pki.server_context)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr(azure_servicebus, "AMQPS_PORT", port)
    key = "c2VjcmV0LXNoYXJlZC1hY2Nlc3Mta2V5LWZvci10ZXN0cw=="
    connection_string = (
        f"Endpoint=sb://{name}/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={key}"
    )
    try:
        async with trap_on(port) as trap:
            publisher = await opened(
                "azure_servicebus", {"name": "events", "connection_string": connection_string}
            )
            try:
                with pytest.raises(DeliveryError):
                    await publisher.publish(*envelope())
            finally:
                await publisher.close()
    finally:
        server.close()
    assert server_names and set(server_names) == {name}
    assert trap.connections == 0
