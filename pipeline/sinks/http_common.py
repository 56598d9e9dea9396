"""How sinks reach the network: a pooled HTTP session, and the outbound policy for SDKs.

HTTP sinks (webhook, hookdeck) share the pool construction below, which applies the
outbound address policy to every request: to resolved names through the connector's
resolver, and to IP-literal hosts (which aiohttp never hands to a resolver) before the
request starts. SDKs that open their own sockets
(AMQP, Kafka, gRPC, Service Bus) cannot take that resolver, so their sinks call
`checked_addresses()` on each host the destination names before the SDK connects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from email.utils import parsedate_to_datetime
from types import SimpleNamespace

import aiohttp

from pipeline.outbound import AddressPolicy, AddressRefused, PolicyResolver
from pipeline.settings import Settings


class SessionPool:
    """One aiohttp session per sink and process, opened on first use."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self, settings: Settings) -> aiohttp.ClientSession:
        """The shared session, (re)opened if it was closed; refused addresses never connect."""
        if self._session is None or self._session.closed:
            policy = AddressPolicy(settings.outbound_allowlist, https_only=settings.https_only)
            connector = aiohttp.TCPConnector(
                resolver=PolicyResolver(policy),
                limit=settings.sink_max_in_flight,
                limit_per_host=settings.sink_max_in_flight_per_destination * 4,
                ttl_dns_cache=60,
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                trace_configs=[_literal_address_check(policy)],
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _literal_address_check(policy: AddressPolicy) -> aiohttp.TraceConfig:
    """Refuse a URL whose host is an IP literal the policy refuses (no resolver sees it),
    or whose scheme it refuses (plain http when https-only)."""

    async def on_request_start(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        if not policy.permits_scheme(params.url.scheme):
            raise AddressRefused("plain http is refused: the outbound policy is https-only")
        host = params.url.raw_host or ""
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        if not policy.permits(host):
            raise AddressRefused(f"{host} is an address the outbound policy refuses")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    return trace


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

    Every address must pass (not just one), because the SDK that connects afterwards
    resolves the name again and may pick any of them. Raises AddressRefused, or OSError
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
