"""Azure Service Bus sink: each delivery is one message sent to the customer's queue or topic.

The message body is the envelope; `message_id` is the delivery id (so Service Bus duplicate
detection, where enabled, drops a retry of a delivery that did arrive), `subject` the event
type, and application properties carry the event id, type and creation time. The client
comes from `client_factory` (the SDK's async ServiceBusClient by default; tests substitute
one), is created on the first publish, and its SDK retries are off: Herald's tiers decide.
The namespace's name is resolved and checked once per client, and the SDK is given the
checked address as its custom endpoint (with a TLS context that verifies the namespace's
name), so it never resolves the name itself; after a connection failure the client is
dropped, and the next attempt resolves the name again.

Failures, most specific first (see `_mapped`):

    message too large (256 KB on the Standard tier)       → EventRejected
    authentication or authorization refused                → CredentialsRefused
    AddressRefused, a malformed connection string, entity
    not found                                               → PermanentError
    entity disabled, quota exceeded, server busy, connection
    or communication errors, SDK timeouts, any other
    ServiceBusError, DNS, timeout                           → RetryableError

Authentication is permanent although the SDK marks it retryable: that flag means a fresh
token might help, but the key itself is what the destination got wrong. A disabled entity
is retryable: disabling is a deliberate, usually temporary, state of the customer's own.

Unlike the other sinks' `_map_errors()`, the mapped error is raised outside the `except`
block, so the SDK's exception is neither its cause nor its context: Service Bus errors can
quote the connection string's parts, and the SharedAccessKey must never travel further.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import certifi
from azure.servicebus import ServiceBusMessage, TransportType
from azure.servicebus import exceptions as bus_errors
from azure.servicebus.aio import ServiceBusClient

from pipeline.outbound import AddressRefused
from pipeline.settings import Settings
from pipeline.sinks.base import (
    Config,
    Credentials,
    CredentialsRefused,
    DeliveryError,
    DeliveryResult,
    EventRejected,
    PermanentError,
    Publisher,
    RetryableError,
    Target,
)
from pipeline.sinks.fields import FieldErrors, config_object, string, unknown_fields
from pipeline.sinks.http_common import checked_addresses
from pipeline.sinks.pinned import server_name_context

AMQPS_PORT = 5671
MAX_ENTITY_NAME = 260
MAX_CONNECTION_STRING = 1024
CONNECTION_STRING_HELP = (
    "must be a Service Bus connection string: Endpoint=sb://…;SharedAccessKeyName=…;"
    "SharedAccessKey=… (or SharedAccessSignature=…)"
)


class Sender(Protocol):
    """The part of azure.servicebus.aio.ServiceBusSender the sink uses."""

    async def send_messages(self, message: ServiceBusMessage) -> None:
        """Send one message; raises a ServiceBusError."""

    async def close(self) -> None:
        """Close the link."""


class Client(Protocol):
    """The part of azure.servicebus.aio.ServiceBusClient the sink uses."""

    def get_queue_sender(self, queue_name: str) -> Sender:
        """A sender to the queue (or topic) of that name."""

    async def close(self) -> None:
        """Close the connection."""


def _sdk_client(connection_string: str, endpoint: str, ssl_context: ssl.SSLContext) -> Client:
    # custom_endpoint_address: the SDK dials this (a checked address), while the namespace
    # stays the AMQP host and the token audience; the context verifies the namespace name.
    # AMQP over 5671 as without an endpoint (with one, the SDK defaults to websockets).
    client: Client = ServiceBusClient.from_connection_string(
        connection_string,
        retry_total=0,
        custom_endpoint_address=endpoint,
        ssl_context=ssl_context,
        transport_type=TransportType.Amqp,
    )
    return client


# Builds a client from a connection string, the address to dial (sb://address:port) and the
# TLS context. Tests replace it; nothing else should.
client_factory: Callable[[str, str, ssl.SSLContext], Client] = _sdk_client


def parse_connection_string(value: str) -> dict[str, str] | None:
    """The connection string's parts by lower-cased key; None unless it has an sb://
    Endpoint with a host and a shared access key (name and key) or signature."""
    parts: dict[str, str] = {}
    for item in value.split(";"):
        if not item.strip():
            continue
        key, equals, part = item.partition("=")
        if not equals or not part:
            return None
        parts[key.strip().lower()] = part.strip()
    try:
        endpoint = urlsplit(parts.get("endpoint", ""))
    except ValueError:
        return None
    has_key = "sharedaccesskeyname" in parts and "sharedaccesskey" in parts
    if endpoint.scheme != "sb" or not endpoint.hostname:
        return None
    if not has_key and "sharedaccesssignature" not in parts:
        return None
    return parts


class ServiceBusPublisher:
    """Sends to one queue or topic through one client and sender, created on first publish."""

    def __init__(self, target: Target, settings: Settings) -> None:
        self._name: str = target.config["name"]
        self._connection_string: str = target.credentials.get("connection_string") or ""
        self._settings = settings
        self._lock = asyncio.Lock()
        self._client: Client | None = None
        self._sender: Sender | None = None

    async def publish(self, delivery_id: str, event: dict[str, Any], body: bytes) -> DeliveryResult:
        message = ServiceBusMessage(
            body,
            content_type="application/json",
            message_id=delivery_id,
            subject=str(event.get("type", "")),
            application_properties={
                "event_id": str(event.get("id", "")),
                "event_type": str(event.get("type", "")),
                "created_at": str(event.get("created_at", "")),
            },
        )
        try:
            async with asyncio.timeout(self._settings.delivery_timeout_s):
                sender = await self._ready_sender()
                await sender.send_messages(message)
        except _SDK_ERRORS as exc:
            error, unreachable = _mapped(exc), isinstance(exc, _UNREACHABLE)
        else:
            return DeliveryResult()
        if unreachable:  # the client dials one address: the next attempt resolves anew
            await self.close()
        raise error  # outside the except block: see the module docstring

    async def _ready_sender(self) -> Sender:
        async with self._lock:
            if self._sender is None:
                parts = parse_connection_string(self._connection_string)
                host = urlsplit(parts["endpoint"]).hostname if parts else None
                if parts is None or host is None:  # validated on create: never so when stored
                    raise PermanentError("azure_servicebus.connection_string is not usable")
                self._client = await self._new_client(host)
                self._sender = self._client.get_queue_sender(self._name)
            return self._sender

    async def _new_client(self, host: str) -> Client:
        """A client that connects to a checked address of `host` (resolved once here, so
        the SDK never resolves the name itself) and verifies TLS against `host`."""
        address = (await checked_addresses(host, AMQPS_PORT, self._settings))[0]
        endpoint = (
            f"sb://[{address}]:{AMQPS_PORT}" if ":" in address else f"sb://{address}:{AMQPS_PORT}"
        )
        # certifi: the SDK's own default CAs. Loading them reads a file: off the loop.
        context = await asyncio.to_thread(server_name_context, host, certifi.where())
        return client_factory(self._connection_string, endpoint, context)

    async def close(self) -> None:
        """Close the sender and the client; harmless to call again."""
        sender, self._sender = self._sender, None
        client, self._client = self._client, None
        if sender is not None:
            await sender.close()
        if client is not None:
            await client.close()


# (exception types, error class, message), most specific first. `{name}` is the class name.
_FAILURES: tuple[tuple[tuple[type[BaseException], ...], type[DeliveryError], str], ...] = (
    ((AddressRefused,), PermanentError, "namespace address refused by the outbound policy"),
    # Over the entity's message size (256 KB on the Standard tier): this event only.
    ((bus_errors.MessageSizeExceededError,), EventRejected, "the message is too large: {name}"),
    (
        (bus_errors.ServiceBusAuthenticationError, bus_errors.ServiceBusAuthorizationError),
        CredentialsRefused,
        "Service Bus refused the credentials: {name}",
    ),
    ((bus_errors.MessagingEntityNotFoundError,), PermanentError, "no such entity: {name}"),
    ((bus_errors.ServiceBusError,), RetryableError, "Service Bus unavailable: {name}"),
    # The SDK's own complaint about a connection string or argument.
    ((ValueError,), PermanentError, "the connection string cannot be used: {name}"),
    ((socket.gaierror,), RetryableError, "the namespace host name does not resolve"),
    ((TimeoutError,), RetryableError, "timed out waiting for Service Bus"),
    ((OSError,), RetryableError, "namespace unreachable: {name}"),
)
_SDK_ERRORS = tuple(t for types, _, _ in _FAILURES for t in types)
# Failures after which the client is dropped, since the namespace may have moved.
_UNREACHABLE = (
    bus_errors.ServiceBusConnectionError,
    bus_errors.ServiceBusCommunicationError,
    TimeoutError,
    OSError,
)


def _mapped(exc: BaseException) -> DeliveryError:
    """The Herald error for an SDK failure, per _FAILURES: a fixed text and a class name."""
    kind, message = next((k, m) for types, k, m in _FAILURES if isinstance(exc, types))
    return kind(message.format(name=type(exc).__name__))


class ServiceBusSink:
    """Validates `azure_servicebus` config objects and opens one sender per destination."""

    type = "azure_servicebus"

    def validate(
        self, raw: Any, errors: FieldErrors, path: str, settings: Settings
    ) -> tuple[Config, Credentials]:
        """`name` (alias `queue_name`) and `connection_string` (write-only), both required:
        without the connection string there is no namespace to send to."""
        raw = config_object(errors, raw, path, self.type)
        unknown_fields(errors, raw, path, ("name", "queue_name", "connection_string"))
        name = string(errors, raw, path, "name", aliases=("queue_name",), max_length=260)
        connection_string = string(
            errors, raw, path, "connection_string", max_length=MAX_CONNECTION_STRING
        )
        credentials: Credentials = {}
        if connection_string is not None:
            parts = parse_connection_string(connection_string)
            if parts is None:
                errors.add(f"{path}.connection_string", f"{CONNECTION_STRING_HELP}.")
            elif name is not None and parts.get("entitypath", name) != name:
                errors.add(f"{path}.connection_string", "names another entity (EntityPath).")
            else:
                credentials["connection_string"] = connection_string
        return {"name": name}, credentials

    async def open(self, target: Target, settings: Settings) -> Publisher:
        """A publisher whose client is created on its first publish."""
        return ServiceBusPublisher(target, settings)

    async def aclose(self) -> None:
        """Nothing process-wide: every publisher owns its client."""


SINK = ServiceBusSink()
