"""Receivers that misbehave, through the real stack: each failure is classified, retried or
dead-lettered as it should be, recorded in the delivery log, and none of them holds up a
healthy destination whose deliveries share their partition.

The stack runs with a 2 s delivery timeout, 3 retries and a 0.2 s base delay (conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.api_client import Api
from tests.support import Receiver, eventually, same_partition_ids

HUGE_BYTES = 64 * 1024 * 1024
CHUNK = b"x" * 65536
# In the query string of every URL below: it must never show up in a recorded error.
URL_SECRET = "token=s3cr3t-in-the-query"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed_context(directory: Path) -> ssl.SSLContext:
    """A server TLS context whose certificate (for 127.0.0.1) nobody trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


class Misbehaving:
    """One real server per misbehaviour, on 127.0.0.1; records when each request began and
    when its handler ended (the connection went away or it answered)."""

    def __init__(self) -> None:
        self.started: dict[str, list[float]] = defaultdict(list)
        self.ended: dict[str, list[float]] = defaultdict(list)
        self.huge_bytes_written = 0
        self.throttled = False
        self._runner: web.AppRunner | None = None
        self._raw: asyncio.Server | None = None
        self._reset: asyncio.Server | None = None
        self.urls: dict[str, str] = {}

    async def start(self, tls: ssl.SSLContext) -> Misbehaving:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        plain = web.TCPSite(self._runner, "127.0.0.1", 0)
        secure = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=tls)
        await plain.start()
        await secure.start()
        self._raw = await asyncio.start_server(self._endless_headers, "127.0.0.1", 0)
        self._reset = await asyncio.start_server(self._reset_connection, "127.0.0.1", 0)
        http = f"http://127.0.0.1:{_port(plain)}"
        names = ("slow-under", "slow-over", "error", "throttle", "redirect", "huge", "endless")
        names += ("stalled-body",)
        self.urls = {name: f"{http}/{name}?{URL_SECRET}" for name in names}
        self.urls["tls"] = f"https://127.0.0.1:{_port(secure)}/tls?{URL_SECRET}"
        self.urls["tls-to-plain"] = f"https://127.0.0.1:{_port(plain)}/error?{URL_SECRET}"
        self.urls["no-such-host"] = f"http://no-such-host.invalid/x?{URL_SECRET}"
        raw_port = self._raw.sockets[0].getsockname()[1]
        self.urls["endless-headers"] = f"http://127.0.0.1:{raw_port}/h?{URL_SECRET}"
        self.urls["refused"] = f"http://127.0.0.1:{_closed_port()}/r?{URL_SECRET}"
        reset_port = self._reset.sockets[0].getsockname()[1]
        self.urls["reset"] = f"http://127.0.0.1:{reset_port}/x?{URL_SECRET}"
        return self

    async def stop(self) -> None:
        for server in (self._raw, self._reset):
            if server is not None:
                server.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.started[name].append(time.monotonic())
        await request.read()
        try:
            return await self._misbehave(name, request)
        finally:
            self.ended[name].append(time.monotonic())

    async def _misbehave(self, name: str, request: web.Request) -> web.StreamResponse:
        # The sleeps below are the misbehaviour under test, not synchronization.
        if name == "slow-under":
            await asyncio.sleep(1.3)
            return web.Response(text="late but fine")
        if name == "slow-over":
            await asyncio.sleep(2.6)
            return web.Response(text="too late")
        if name == "error":
            return web.Response(status=500, text="boom")
        if name == "throttle":
            if not self.throttled:
                self.throttled = True
                return web.Response(status=429, text="slow down", headers={"Retry-After": "1"})
            return web.Response(text="thanks")
        if name == "redirect":
            return web.Response(status=302, headers={"Location": "/elsewhere"})
        if name in ("huge", "endless"):
            return await self._stream(name, request)
        if name == "stalled-body":
            return await self._stalled_body(request)
        return web.Response(status=404)  # /elsewhere, where the redirect points

    async def _stalled_body(self, request: web.Request) -> web.StreamResponse:
        """A 200 whose body stops after a few bytes (of the 10,000 announced) and hangs."""
        response = web.StreamResponse()
        response.content_length = 10_000
        await response.prepare(request)
        await response.write(b"z" * 100)
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await asyncio.sleep(30)
        return response

    async def _stream(self, name: str, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        if name == "huge":
            response.content_length = HUGE_BYTES
        await response.prepare(request)
        try:
            while name == "endless" or self.huge_bytes_written < HUGE_BYTES:
                await response.write(CHUNK if name == "huge" else b"y" * 100)
                if name == "huge":
                    self.huge_bytes_written += len(CHUNK)
                else:
                    await asyncio.sleep(0.02)  # a slow, endless stream
        except ConnectionError:
            pass  # Herald hung up, as it should
        return response

    async def _reset_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Read the request, then reset the connection (RST: a zero linger time)."""
        self.started["reset"].append(time.monotonic())
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        writer.transport.abort()

    async def _endless_headers(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A status line, then header lines forever: only a total timeout ends this."""
        self.started["endless-headers"].append(time.monotonic())
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\n")
            while True:
                writer.write(b"X-Still-Going: yes\r\n")
                await writer.drain()
                await asyncio.sleep(0.05)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.ended["endless-headers"].append(time.monotonic())
            writer.close()


def _port(site: web.TCPSite) -> int:
    return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]


# name → (final delivery status, attempts, how every failed attempt's error starts,
#         the first attempt's response status)
EXPECTED: dict[str, tuple[str, int, str | None, int | None]] = {
    "slow-under": ("succeeded", 1, None, 200),
    "slow-over": ("failed", 4, "timed out waiting for the receiver", None),
    "error": ("failed", 4, "HTTP 500", 500),
    "throttle": ("succeeded", 2, "HTTP 429", 429),
    "redirect": ("failed", 4, "HTTP 302 (redirects are not followed)", 302),
    "huge": ("succeeded", 1, None, 200),
    "endless": ("succeeded", 1, None, 200),
    "tls": ("failed", 4, "TLS certificate verification failed: self-signed certificate", None),
    "endless-headers": ("failed", 4, "timed out waiting for the receiver", None),
    "refused": ("failed", 4, "connection failed: connection refused", None),
    # A reset is retried like any connection failure.
    "reset": ("failed", 4, "request failed: ", None),
    # Stalled after the status line and a few bytes: the status stands (README).
    "stalled-body": ("succeeded", 1, None, 200),
    "tls-to-plain": ("failed", 4, "TLS handshake failed: wrong version number", None),
    # The resolver's own words follow (they differ between resolvers).
    "no-such-host": ("failed", 4, "connection failed: name resolution failed: ", None),
}


async def _final_delivery(api: Api, destination_id: str, status: str) -> dict[str, Any] | None:
    _, page = await api.call("GET", f"/v2/event-destinations/{destination_id}/event-deliveries")
    done = [d for d in page["data"] if d["status"] == status]
    if not done:
        return None
    _, detail = await api.call("GET", f"/v2/event-deliveries/{done[0]['id']}")
    return dict(detail)


@pytest.fixture
async def misbehaving(tmp_path: Path) -> AsyncIterator[Misbehaving]:
    server = await Misbehaving().start(self_signed_context(tmp_path))
    yield server
    await server.stop()


# Generous: every receiver's last retry, and a loaded machine (each wait has its deadline).
@pytest.mark.timeout(400)
async def test_misbehaving_receivers_are_classified_and_do_not_block_a_healthy_one(
    api: Api, receiver: Receiver, misbehaving: Misbehaving
) -> None:
    names = list(EXPECTED)
    details: dict[str, dict[str, Any]] = {}
    *bad_ids, healthy_id = same_partition_ids(len(names) + 1, "evtd_mis")
    destinations = {}
    for name, destination_id in zip(names, bad_ids, strict=True):
        destinations[name] = await api.create_webhook(
            misbehaving.urls[name], ["misbehave.probe"], id=destination_id
        )
    await api.create_webhook(
        f"{receiver.url}/healthy", ["misbehave.probe", "misbehave.ping"], id=healthy_id
    )
    await api.publish("misbehave.probe")
    # Once the slow and endless ones are in flight, the healthy one must still be served.
    await eventually(
        lambda: all(misbehaving.started[n] for n in ("slow-over", "endless-headers")),
        what="the stuck receivers to be in flight",
    )
    pings = [{"type": "misbehave.ping", "data": {"i": i}} for i in range(10)]
    assert (await api.call("POST", "/v2/events/batch", {"events": pings}))[0] == 202
    await eventually(
        lambda: len(receiver.bodies("/healthy")) == 11, timeout_s=60, what="the healthy one"
    )
    healthy_done = receiver.requests[-1].received_at
    # The stuck request was still open when the healthy one was done: Herald cut it (at
    # its 2 s timeout) only afterwards. Done wrong, the healthy deliveries would wait for
    # that cut, however long they took on a loaded machine.
    [cut, *_] = await eventually(
        lambda: misbehaving.ended["endless-headers"], timeout_s=30, what="the first cut"
    )
    assert healthy_done < cut

    for name, (status, attempts, error, response_status) in EXPECTED.items():
        detail = await eventually(
            lambda d=destinations[name], s=status: _final_delivery(api, d["id"], s),
            timeout_s=90,
            what=f"the {name} delivery to be {status}",
        )
        details[name] = detail
        got = detail["attempts"]
        assert len(got) == attempts, (name, got)
        failed = [a for a in got if a["outcome"] == "failed"]
        assert all(error and a["error"].startswith(error) for a in failed), (name, failed)
        assert all(URL_SECRET not in str(a) for a in got), name
        assert got[0]["response_status"] == response_status, (name, got[0])
        if status == "succeeded":
            assert got[-1]["outcome"] == "success", (name, got)
        if name in ("huge", "endless"):  # only the first KiB is recorded
            assert len(got[0]["response_body"]) == 1024, name
    await _check_details(misbehaving, details)


async def _check_details(misbehaving: Misbehaving, details: dict[str, dict[str, Any]]) -> None:
    # A redirect is never followed.
    assert not misbehaving.started["elsewhere"]
    # 429 with Retry-After: 1 skipped tiers 1 and 2 (0.2 s, 0.4 s) for the last, 0.8 s.
    first, second = misbehaving.started["throttle"][:2]
    assert 0.79 <= second - first < 10
    # The huge body was not read: Herald hung up after its first KiB.
    assert misbehaving.huge_bytes_written < HUGE_BYTES // 4
    # The endless stream ended because Herald hung up, well before the 2 s timeout.
    [start], [end] = misbehaving.started["endless"], misbehaving.ended["endless"]
    assert end - start < 2
    # Failures were retried on schedule: the timeouts four times, each cut at 2 s.
    stuck, cut = misbehaving.started["endless-headers"], misbehaving.ended["endless-headers"]
    await eventually(lambda: len(cut) == 4, timeout_s=60, what="the last stuck request cut")
    # Cut at the 2 s timeout, not ended by the receiver (it never ends by itself): Herald's
    # own clock says each attempt lasted its timeout. The receiver's clock starts only when
    # its accept callback runs, which a loaded machine delays by a fraction of a second
    # (CI once saw < 1.9 s there), so it only checks the connection was held open, not
    # dropped at once.
    latencies = [a["latency_ms"] for a in details["endless-headers"]["attempts"]]
    assert all(1990 <= ms < 10_000 for ms in latencies), latencies
    held = [round(e - s, 3) for s, e in zip(stuck, cut, strict=True)]
    assert all(1.0 <= seconds < 10 for seconds in held), held
