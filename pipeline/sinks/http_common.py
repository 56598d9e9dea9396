"""How sinks reach the network: a pooled HTTP session, and the outbound policy for SDKs.

HTTP sinks (webhook, hookdeck) share the pool construction below, which applies the
outbound address policy to every request: to resolved names through the connector's
resolver, and to IP-literal hosts (which aiohttp never hands to a resolver) and the scheme
through `SessionPool.refusal()`, which a publisher asks once for its fixed URL when it
opens (its requests never follow redirects) and raises before each request it refuses.
SDKs that open their own sockets (AMQP, Kafka, gRPC, Service Bus) cannot take that
resolver: their sinks resolve each host once with `checked_addresses()` and make the SDK
dial one of the checked addresses (pinned.py), so the SDK never resolves the name a second
time.

`transport_errors()` maps what aiohttp and the socket raise onto the sink exceptions, and
`read_head()` reads the start of a response body without ever reading the whole of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime

import aiohttp
from yarl import URL

from pipeline import tracing
from pipeline.outbound import AddressPolicy, AddressRefused, PolicyResolver
from pipeline.settings import Settings
from pipeline.sinks.base import PermanentError, RetryableError


class SessionPool:
    """One aiohttp session per sink and process, opened on first use."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._policy: AddressPolicy | None = None

    def refusal(self, settings: Settings, url: URL) -> str | None:
        """Why the outbound policy refuses `url` before any connection (an IP-literal host
        it refuses, or plain http when https-only), or None: a name's addresses are checked
        by the session's resolver when it connects."""
        self.session(settings)  # the policy of the session the publisher will use
        policy = self._policy
        assert policy is not None
        if not policy.permits_scheme(url.scheme):
            return "plain http is refused: the outbound policy is https-only"
        host = url.raw_host or ""
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return None
        return None if policy.permits(host) else f"{host} is an address the outbound policy refuses"

    def session(self, settings: Settings) -> aiohttp.ClientSession:
        """The shared session, (re)opened if it was closed. Refused addresses never connect:
        its resolver checks names; IP literals and the scheme are the publisher's to check
        with `refusal()`, once per URL (a trace hook on every request cost more than the
        rest of the request's own Python)."""
        if self._session is None or self._session.closed:
            policy = AddressPolicy(settings.outbound_allowlist, https_only=settings.https_only)
            self._policy = policy
            connector = aiohttp.TCPConnector(
                resolver=PolicyResolver(policy),
                limit=settings.sink_max_in_flight,
                limit_per_host=settings.sink_max_in_flight_per_destination * 4,
                ttl_dns_cache=60,
                enable_cleanup_closed=True,
            )
            # With tracing on, each request is a span whose `traceparent` the receiver gets.
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                trace_configs=tracing.client_trace_configs(),
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


async def read_head(response: aiohttp.ClientResponse, limit_bytes: int) -> str:
    """The first `limit_bytes` of a response body (fewer at its end), decoded leniently.

    Never reads more than the limit, however large or endless the body is: the rest stays
    unread and the connection is closed rather than reused. A body that stalls or breaks
    off before the limit is cut by the request's total timeout or the disconnect, and what
    arrived is kept: the status line already came, so the status stands.
    """
    chunks: list[bytes] = []
    size = 0
    with contextlib.suppress(TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientOSError):
        while size < limit_bytes:
            chunk = await response.content.read(limit_bytes - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


@contextlib.contextmanager
def transport_errors(peer: str) -> Iterator[None]:
    """aiohttp and socket errors → RetryableError / PermanentError, most specific first.

    `peer` names the other side in messages ("the receiver", "Hookdeck"). Messages never
    include the URL (it may carry credentials in its userinfo or query):

        AddressRefused (bare, or inside ClientConnectorError)   permanent
        ClientConnectorCertificateError   retryable: "TLS certificate verification failed"
        ClientSSLError                    retryable: "TLS handshake failed"
        ClientConnectorError              retryable: "connection failed: <errno text>"
        TimeoutError                      retryable: "timed out waiting for <peer>"
        ClientError, OSError              retryable: "request failed: <class name>"

    A certificate error is retryable although it usually needs a person to fix it: an
    expired or misissued certificate is typically replaced within hours, which the retry
    schedule (about 8.5 h by default) covers; if it is not, the delivery is dead-lettered
    like any other and the destination is disabled by the usual rule.
    """
    try:
        yield
    except (RetryableError, PermanentError):
        raise
    except AddressRefused as exc:
        raise PermanentError(f"{peer}'s address is refused by the outbound policy") from exc
    except aiohttp.ClientConnectorCertificateError as exc:
        reason = _certificate_reason(exc.certificate_error)
        raise RetryableError(f"TLS certificate verification failed: {reason}") from exc
    except aiohttp.ClientSSLError as exc:
        reason = getattr(exc.os_error, "reason", None) or type(exc.os_error).__name__
        raise RetryableError(
            f"TLS handshake failed: {str(reason).lower().replace('_', ' ')}"
        ) from exc
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, AddressRefused):
            raise PermanentError(f"{peer}'s address is refused by the outbound policy") from exc
        raise RetryableError(f"connection failed: {_os_reason(exc.os_error)}") from exc
    except TimeoutError as exc:
        raise RetryableError(f"timed out waiting for {peer}") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise RetryableError(f"request failed: {type(exc).__name__}") from exc


def _certificate_reason(error: Exception) -> str:
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return str(error.verify_message)
    return type(error).__name__


def _os_reason(error: OSError) -> str:
    """ "connection refused" rather than the socket's text, which names the address; a
    resolver's own text for a name that did not resolve (it names nothing)."""
    if isinstance(error, socket.gaierror):
        return f"name resolution failed: {str(error.strerror or 'error').lower()}"
    if error.errno is not None and error.errno in errno.errorcode:
        return os.strerror(error.errno).lower()
    return "error"


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


async def checked_addresses(host: str, port: int, settings: Settings) -> list[str]:
    """The addresses `host` resolves to, if the outbound policy permits every one of them.

    One lookup, through the loop's getaddrinfo (which tests may override). Every address
    must pass (not just one): a name that mixes refused and permitted answers is refused.
    Callers connect only to the addresses returned. Raises AddressRefused, or OSError
    (socket.gaierror) when the name does not resolve.
    """
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    policy = AddressPolicy(settings.outbound_allowlist)
    if not addresses or not all(policy.permits(address) for address in addresses):
        raise AddressRefused(f"{host} resolves to an address the outbound policy refuses")
    return addresses
