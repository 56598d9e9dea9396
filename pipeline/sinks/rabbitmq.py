"""RabbitMQ sink: each delivery is a persistent message published to the customer's exchange.

The routing key is the event type; publisher confirms make a publish succeed only once the
broker has taken the message. A message that no queue is bound to is still delivered as
far as Herald can tell (routing inside the customer's broker is theirs to configure).

Failures, most specific first (see `_FAILURES`):

    AddressRefused, login refused (ACCESS_REFUSED), vhost or exchange
    access refused (403), exchange missing (404)          → PermanentError
    a nack'd message, broker unreachable, connection or channel
    lost (a missing vhost shows as a closed connection), DNS failure,
    timeout                                               → RetryableError

A refused login or a missing exchange is permanent: the destination is configured wrong
and the same attempt cannot succeed however often it is repeated (and repeated failed
logins can lock the account on the customer's broker). A nack means the broker could not
take the message right now (a full disk, a rejecting queue policy): retryable.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aio_pika.connection import make_url
from yarl import URL

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
from pipeline.sinks.pinned import open_stream

MAX_EXCHANGE_NAME = 255  # an AMQP short string
URL_SCHEMES = {"amqp": 5672, "amqps": 5671}
SERVER_URL_HELP = "must be host[:port] or an amqp:// or amqps:// URL"


@dataclass(frozen=True)
class Server:
    """Where the broker is: `server_url` parsed, without its credentials."""

    host: str
    port: int
    tls: bool
    virtual_host: str
    username: str | None
    password: str | None

    def public_url(self, given_port: int | None) -> str:
        """`host[:port]` as the reference shows it, or a URL when TLS or a vhost matter."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        hostport = host if given_port is None else f"{host}:{given_port}"
        if not self.tls and self.virtual_host == "/":
            return hostport
        scheme = "amqps" if self.tls else "amqp"
        return f"{scheme}://{hostport}/{quote(self.virtual_host, safe='')}"


def parse_server_url(value: str) -> tuple[Server, int | None] | None:
    """`host[:port]` or `amqp[s]://[user[:password]@]host[:port][/vhost]`; None if neither.

    Also returns the port as given (None when the scheme's default applies).
    """
    try:
        parts = urlsplit(value if "://" in value else f"//{value}")
        given_port = parts.port
    except ValueError:
        return None
    if "://" in value and parts.scheme not in URL_SCHEMES:
        return None
    if not parts.hostname or parts.query or parts.fragment or given_port == 0:
        return None
    if "://" not in value and (parts.path or "@" in parts.netloc):
        return None
    tls = parts.scheme == "amqps"
    return (
        Server(
            host=parts.hostname,
            port=given_port or URL_SCHEMES["amqps" if tls else "amqp"],
            tls=tls,
            virtual_host=_virtual_host(parts),
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
        ),
        given_port,
    )


def _virtual_host(parts: SplitResult) -> str:
    # As the AMQP URI spec has it: no path (or "/") is the default vhost "/".
    return unquote(parts.path[1:]) if len(parts.path) > 1 else "/"


class CheckedTransport(aiormq.connection.TransportFactory):
    """aiormq's connection hook: resolve the broker's name once, check every address, dial
    one of them; over TLS the certificate is verified against the name (pinned.py)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Called by aiormq for each connection, with its SSL context provider."""
        provider = kwargs.pop("ssl_context_provider")
        context = await provider.get_context() if url.scheme == "amqps" else None
        if url.host is None or url.port is None:  # make_url always sets both
            raise PermanentError("rabbitmq.server_url is not usable")
        return await open_stream(url.host, url.port, self._settings, ssl_context=context, **kwargs)


class RabbitMQPublisher:
    """Publishes to one exchange over one robust connection, opened on first publish."""

    def __init__(self, target: Target, settings: Settings) -> None:
        parsed = parse_server_url(target.config["server_url"])
        if parsed is None:  # validated on create; a stored record is never like this
            raise PermanentError("rabbitmq.server_url is not usable")
        self._server = parsed[0]
        self._exchange_name: str = target.config["exchange"]
        self._username = target.credentials.get("username")
        self._password = target.credentials.get("password")
        self._settings = settings
        self._timeout_s = settings.delivery_timeout_s
        self._lock = asyncio.Lock()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def publish(self, delivery_id: str, event: dict[str, Any], body: bytes) -> DeliveryResult:
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=delivery_id,
            type=str(event.get("type", "")),
            app_id="herald",
            headers={
                "event_id": str(event.get("id", "")),
                "event_type": str(event.get("type", "")),
                "created_at": str(event.get("created_at", "")),
            },
        )
        with _map_errors():
            async with asyncio.timeout(self._timeout_s):
                exchange = await self._ready_exchange()
                try:
                    await exchange.publish(message, routing_key=str(event.get("type", "")))
                except aiormq.exceptions.AMQPChannelError:
                    await self._drop_channel()  # the broker closed it; open a new one next time
                    raise
        return DeliveryResult()

    async def _ready_exchange(self) -> AbstractExchange:
        async with self._lock:
            if self._connection is None or self._connection.is_closed:
                self._connection = await self._connect()
            if self._channel is None or self._channel.is_closed or self._exchange is None:
                self._channel = await self._connection.channel(publisher_confirms=True)
                # No passive declare: a missing exchange shows as a 404 on the first publish.
                self._exchange = await self._channel.get_exchange(self._exchange_name, ensure=False)
            return self._exchange

    async def _connect(self) -> AbstractRobustConnection:
        server = self._server
        url = make_url(
            host=server.host,
            port=server.port,
            login=self._username or "guest",
            password=self._password or "guest",
            virtualhost=server.virtual_host,
            ssl=server.tls,
        )
        # Not aio_pika.connect_robust: it cannot pass a transport factory to aiormq.
        connection = aio_pika.RobustConnection(url, client_properties={"connection_name": "herald"})
        # Every connect, reconnects included, dials an address checked just before.
        connection.kwargs["transport_factory"] = CheckedTransport(self._settings)
        await connection.connect(timeout=self._timeout_s)
        return connection

    async def _drop_channel(self) -> None:
        channel, self._channel, self._exchange = self._channel, None, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
                await channel.close()

    async def close(self) -> None:
        """Close the connection (and its channel); harmless to call again."""
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None and not connection.is_closed:
            await connection.close()


# (exception types, error class, message), most specific first. `{name}` is the class name.
_FAILURES: tuple[tuple[tuple[type[BaseException], ...], type[DeliveryError], str], ...] = (
    ((AddressRefused,), PermanentError, "broker address refused by the outbound policy"),
    (
        (aiormq.exceptions.ProbableAuthenticationError, aiormq.exceptions.AuthenticationError),
        PermanentError,
        "the broker refused the login (ACCESS_REFUSED)",
    ),
    (
        (aiormq.exceptions.ConnectionNotAllowed,),
        PermanentError,
        "the broker refused access to the virtual host",
    ),
    (
        (aiormq.exceptions.ChannelAccessRefused,),
        PermanentError,
        "the broker refused access to the exchange (403)",
    ),
    (
        (aiormq.exceptions.ChannelNotFoundEntity,),
        PermanentError,
        "the exchange does not exist on the broker (404)",
    ),
    (
        (aiormq.exceptions.DeliveryError,),
        RetryableError,
        "the broker did not confirm the message (nack)",
    ),
    ((socket.gaierror,), RetryableError, "the broker host name does not resolve"),
    ((TimeoutError,), RetryableError, "timed out talking to the broker"),
    (
        # ChannelInvalidStateError: a channel closed under us (a RuntimeError, not an AMQPError).
        (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, OSError),
        RetryableError,
        "broker unavailable: {name}",
    ),
)
_SDK_ERRORS = tuple(t for types, _, _ in _FAILURES for t in types)


@contextlib.contextmanager
def _map_errors() -> Iterator[None]:
    """aio-pika / aiormq / socket errors → RetryableError / PermanentError, per _FAILURES.

    Messages carry a fixed text or the exception class, never the server URL (which could
    hold the password) or a credential.
    """
    try:
        yield
    except (RetryableError, PermanentError):
        raise
    except _SDK_ERRORS as exc:
        kind, message = next((k, m) for types, k, m in _FAILURES if isinstance(exc, types))
        raise kind(message.format(name=type(exc).__name__)) from exc


class RabbitMQSink:
    """Validates `rabbitmq` config objects and opens one publisher per destination."""

    type = "rabbitmq"

    def validate(
        self, raw: Any, errors: FieldErrors, path: str, settings: Settings
    ) -> tuple[Config, Credentials]:
        """`server_url` and `exchange` (required), `username` and `password` (write-only).

        A full AMQP URL is split: the host (and port, TLS, vhost) stays in the config; the
        username and password go to the credentials.
        """
        raw = config_object(errors, raw, path, self.type)
        unknown_fields(errors, raw, path, ("server_url", "exchange", "username", "password"))
        exchange = string(errors, raw, path, "exchange", max_length=MAX_EXCHANGE_NAME)
        server_url = string(errors, raw, path, "server_url")
        credentials: Credentials = {}
        for name in ("username", "password"):
            value = string(errors, raw, path, name, required=False)
            if value is not None:
                credentials[name] = value
        config: Config = {"server_url": None, "exchange": exchange}
        if server_url is not None:
            parsed = parse_server_url(server_url)
            if parsed is None:
                errors.add(f"{path}.server_url", f"{SERVER_URL_HELP}.")
                return config, credentials
            server, given_port = parsed
            config["server_url"] = server.public_url(given_port)
            _merge_url_credentials(errors, path, server, credentials)
        return config, credentials

    async def open(self, target: Target, settings: Settings) -> Publisher:
        """A publisher that connects on its first publish (no network I/O here)."""
        return RabbitMQPublisher(target, settings)

    async def aclose(self) -> None:
        """Nothing process-wide: every publisher owns its connection."""


def _merge_url_credentials(
    errors: FieldErrors, path: str, server: Server, credentials: Credentials
) -> None:
    for name, value in (("username", server.username), ("password", server.password)):
        if value is None or value == "":
            continue
        if name in credentials:
            errors.add(f"{path}.{name}", "is also in server_url: give it only once.")
        else:
            credentials[name] = value


SINK = RabbitMQSink()
