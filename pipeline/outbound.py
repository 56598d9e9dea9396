"""The outbound address policy: which resolved addresses a delivery may connect to.

Checked at delivery time, after DNS resolution, so a name that resolves to an internal
address is refused too: loopback, private, link-local (cloud metadata), carrier-grade NAT,
multicast and reserved ranges, unless a CIDR in the allowlist admits the address. With
`https_only` (HERALD_HTTPS_ONLY) plain-http URLs are refused too, including those of
destinations created before the setting was switched on.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

_CGNAT = ipaddress.ip_network("100.64.0.0/10")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(OSError):
    """The destination resolved to an address the policy refuses."""


class AddressPolicy:
    """Decides whether an address may be reached."""

    def __init__(self, allowlist: Iterable[str] = (), *, https_only: bool = False) -> None:
        self._allowed = [ipaddress.ip_network(c, strict=False) for c in allowlist]
        self.https_only = https_only

    def permits_scheme(self, scheme: str) -> bool:
        """False for anything but https when the policy is https-only."""
        return not self.https_only or scheme.lower() == "https"

    def permits(self, address: str) -> bool:
        """True if `address` is public, or internal but allowlisted."""
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in network for network in self._allowed):
            return True
        internal = (
            ip.is_loopback
            or ip.is_private
            or ip.is_link_local
            or ip.is_multicast
            or ip.is_reserved
            or ip.is_unspecified
            or ip in _CGNAT
        )
        return not internal


class PolicyResolver(AbstractResolver):
    """aiohttp resolver that drops refused addresses, failing if none is left."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        permitted = [r for r in results if self._policy.permits(r["host"])]
        if not permitted:
            raise AddressRefused(f"{host} resolves only to addresses the outbound policy refuses")
        return permitted

    async def close(self, *args: Any) -> None:
        await self._inner.close()
