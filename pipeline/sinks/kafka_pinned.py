"""Every broker connection of a Kafka sink's producer goes to an address checked just before.

aiokafka opens connections in two places, both in AIOKafkaClient: `bootstrap` (to the
destination's bootstrap servers) and `_get_conn` (to every broker the cluster metadata
advertises, for metadata, produce and coordinator requests), and both call the module
function `aiokafka.client.create_conn`. aiokafka offers no parameter for a connection
factory, so `pin_connections` gives one client its own copies of those two methods, the
library's code unchanged, whose `create_conn` is `PinnedConnections.create_conn`: resolve
the host once, check every address against the outbound policy, connect to one of them.
Nothing else in the process changes (Herald's own Kafka clients are untouched), and a
unit test fails if an aiokafka upgrade connects anywhere else.

A refused address is an OSError that aiokafka logs and treats like an unreachable broker
(it tries the next one, refreshes metadata, retries until its request timeout); so the
refusal is also recorded in `refused`, for the sink to report the failure as permanent.
"""

from __future__ import annotations

import ssl
import types
from typing import Any

import aiokafka.client
from aiokafka.client import AIOKafkaClient
from aiokafka.conn import AIOKafkaConnection, create_conn

from pipeline.outbound import AddressRefused
from pipeline.settings import Settings
from pipeline.sinks.http_common import checked_addresses
from pipeline.sinks.pinned import is_address, server_name_context

# The AIOKafkaClient methods that open connections, each through `create_conn`.
CONNECTING_METHODS = ("bootstrap", "_get_conn")


class PinnedConnections:
    """The connection factory of one producer, and the last refusal it saw."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._contexts: dict[str, ssl.SSLContext] = {}
        self.refused: AddressRefused | None = None

    async def create_conn(self, host: str, port: int, **options: Any) -> AIOKafkaConnection:
        """aiokafka's create_conn, to a checked address of `host` (tried in order)."""
        try:
            addresses = await checked_addresses(host, port, self._settings)
        except AddressRefused as exc:
            self.refused = exc
            raise
        if options.get("ssl_context") is not None and not is_address(host):
            options["ssl_context"] = self._context_for(host)
        error: OSError | None = None
        for address in addresses:
            try:
                connection: AIOKafkaConnection = await create_conn(address, port, **options)
            except OSError as exc:
                error = exc
            else:
                return connection
        assert error is not None  # checked_addresses never returns an empty list
        raise error

    def _context_for(self, server_name: str) -> ssl.SSLContext:
        # aiokafka would verify the certificate against the address it is given.
        if server_name not in self._contexts:
            self._contexts[server_name] = server_name_context(server_name)
        return self._contexts[server_name]


def pin_connections(client: AIOKafkaClient, connections: PinnedConnections) -> None:
    """Make `client` open every broker connection through `connections`."""
    namespace = {**vars(aiokafka.client), "create_conn": connections.create_conn}
    for name in CONNECTING_METHODS:
        method = _rebound(getattr(AIOKafkaClient, name), namespace)
        setattr(client, name, types.MethodType(method, client))


def _rebound(function: Any, namespace: dict[str, Any]) -> types.FunctionType:
    """`function` with its global names looked up in `namespace` instead of its module."""
    code = function.__code__
    rebound = types.FunctionType(
        code,
        namespace,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    rebound.__kwdefaults__ = function.__kwdefaults__
    return rebound
