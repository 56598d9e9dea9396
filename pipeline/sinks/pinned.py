"""Connecting SDKs to checked addresses only: resolve once, check, dial that address.

The outbound policy (pipeline/outbound.py) is only as good as the address that is finally
dialled. A sink that checks a name and then hands the name to an SDK lets the SDK resolve
it again, and a second DNS answer (rebinding) may name an address the policy refuses. So
the SDK sinks resolve a name once (`checked_addresses`), check every address, and make
the SDK connect to one of those addresses, each through the SDK's own connection hook:

    RabbitMQ (aiormq)        a TransportFactory (rabbitmq.py)
    Kafka (aiokafka)         every broker connection of the producer's client (kafka_pinned.py)
    Azure Service Bus        the SDK's custom endpoint address (azure_servicebus.py)

Where TLS is used, the certificate is still verified against the name the destination
gave (and the name is sent as SNI), not against the address: `open_stream` passes it as
`server_hostname`, and `server_name_context` makes a context that verifies a fixed name
for SDKs that take an SSLContext but no server name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from typing import Any

from pipeline.settings import Settings
from pipeline.sinks.http_common import checked_addresses


def is_address(host: str) -> bool:
    """True for an IP literal (which no resolver sees and TLS verifies as an address)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class ServerNameContext(ssl.SSLContext):
    """A client context that verifies (and sends as SNI) `server_name`, whatever host the
    SDK dialled: for SDKs that take a context but pass the dialled address as the name."""

    server_name: str

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        """asyncio's (and uvloop's) TLS transport calls this with the dialled host."""
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name, session)


def server_name_context(server_name: str, cafile: str | None = None) -> ssl.SSLContext:
    """A verifying client context (the system's CAs, or `cafile`) for `server_name`."""
    context = ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
    context.server_name = server_name
    if cafile is not None:
        context.load_verify_locations(cafile)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context


async def open_stream(
    host: str,
    port: int,
    settings: Settings,
    *,
    ssl_context: ssl.SSLContext | None = None,
    **options: Any,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to one of the checked addresses of `host`, tried in the resolver's
    order; with `ssl_context`, TLS verified against `host`. Raises AddressRefused, or the
    last address's OSError."""
    addresses = await checked_addresses(host, port, settings)
    server_hostname = host if ssl_context is not None else None
    error: OSError | None = None
    for address in addresses:
        try:
            return await asyncio.open_connection(
                address, port, ssl=ssl_context, server_hostname=server_hostname, **options
            )
        except OSError as exc:
            error = exc
    assert error is not None  # checked_addresses never returns an empty list
    raise error
