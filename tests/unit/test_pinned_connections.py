"""The connection hooks the SDK sinks rely on (pipeline/sinks/pinned.py, kafka_pinned.py)."""

from __future__ import annotations

import asyncio
import inspect
import ssl
from pathlib import Path

import aiokafka.client
import pytest
import uvloop
from aiokafka.client import AIOKafkaClient

from pipeline.settings import Settings
from pipeline.sinks.kafka_pinned import CONNECTING_METHODS, PinnedConnections, pin_connections
from pipeline.sinks.pinned import server_name_context
from tests.tls_support import make_pki

NAME = "broker.herald.test"


def _functions_naming(module_or_class: object, name: str) -> set[str]:
    found = set()
    for attribute, value in vars(module_or_class).items():
        function = inspect.unwrap(value) if callable(value) else None
        code = getattr(function, "__code__", None)
        if code is not None and name in code.co_names:
            found.add(attribute)
    return found


def test_aiokafka_connects_only_through_the_pinned_methods() -> None:
    """If an aiokafka upgrade opens connections elsewhere, this fails (and the sink would
    connect to unchecked addresses)."""
    assert _functions_naming(AIOKafkaClient, "create_conn") == set(CONNECTING_METHODS)
    assert _functions_naming(aiokafka.client, "create_conn") == set()
    assert _functions_naming(AIOKafkaClient, "AIOKafkaConnection") == set()


async def test_a_pinned_client_calls_herald_for_every_connection() -> None:
    client = AIOKafkaClient(bootstrap_servers="name.herald.test:9092")
    calls: list[tuple[str, int]] = []

    class Recording(PinnedConnections):
        async def create_conn(self, host: str, port: int, **options: object) -> object:
            calls.append((host, port))
            raise OSError("refused by the test")

    pin_connections(client, Recording(Settings()))
    with pytest.raises(aiokafka.errors.KafkaConnectionError):
        await client.bootstrap()
    assert calls == [("name.herald.test", 9092)]
    await client.close()


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> list[str | None]:
    """Connect to 127.0.0.1 (an address the certificate does not name) with `client`."""
    seen: list[str | None] = []
    server.sni_callback = lambda _, name, __: seen.append(name)
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        writer.close()
    finally:
        listener.close()
    return seen


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_server_name_context_verifies_the_name_not_the_address(
    tmp_path: Path, loop_factory: object
) -> None:
    pki = make_pki(tmp_path, NAME)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        mine = server_name_context(NAME, str(pki.ca_file))
        seen = runner.run(_handshake(pki.server_context, mine))
        assert seen == [NAME]
        with pytest.raises(ssl.SSLCertVerificationError):
            other = server_name_context("other.herald.test", str(pki.ca_file))
            runner.run(_handshake(pki.server_context, other))
