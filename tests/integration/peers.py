"""The peers of the session's Herald stack for the destination types that need one of
their own: moto's server (AWS), a Pub/Sub Publisher gRPC server, a Hookdeck receiver.

The stack's worker is a subprocess started once per session, and the endpoints it uses
for AWS, Pub/Sub and Hookdeck are settings read at its start; so these peers run for the
whole session too, each on threads of its own (no test's event loop owns them).

- moto's server is a real AWS API peer, bound to 127.0.0.1 (it binds 0.0.0.0 unless told).
- No Pub/Sub server (nor its emulator, a Java download) can run on this machine: the peer
  is a real gRPC server implementing the real `google.pubsub.v1.Publisher/Publish` RPC
  with the library's own request and response types, as the Pub/Sub conformance test's is.
- The Hookdeck peer is an HTTP server answering the publish endpoint as Hookdeck does,
  recording each request (path = source id).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
from google.pubsub_v1.types import PublishRequest, PublishResponse, PubsubMessage

START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- moto ---------------------------------------------------------------------------------


def _moto_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means it is serving
    except OSError:
        return False


def start_moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start moto's server on a free loopback port; the process and its URL, once it answers."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto exited ({process.returncode}):\n{log.read_text()[-4000:]}")
        if _moto_answers(port):
            return process, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    stop_process(process)
    raise RuntimeError(f"moto not answering after {START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill if it lingers."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


# -- Pub/Sub ------------------------------------------------------------------------------


@dataclass
class PubSubPeer:
    """The Publish RPC on a threaded gRPC server: records messages by topic path."""

    endpoint: str = ""
    _published: dict[str, list[PubsubMessage]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: grpc.Server | None = None

    def _publish(self, request: PublishRequest, _: grpc.ServicerContext) -> PublishResponse:
        with self._lock:
            messages = self._published.setdefault(request.topic, [])
            messages.extend(request.messages)
            return PublishResponse(message_ids=[str(len(messages))])

    def start(self) -> PubSubPeer:
        handler = grpc.method_handlers_generic_handler(
            "google.pubsub.v1.Publisher",
            {
                "Publish": grpc.unary_unary_rpc_method_handler(
                    self._publish,
                    request_deserializer=PublishRequest.deserialize,
                    response_serializer=PublishResponse.serialize,
                )
            },
        )
        self._server = grpc.server(ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers((handler,))
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.endpoint = f"127.0.0.1:{port}"
        return self

    def messages(self, topic_path: str) -> list[PubsubMessage]:
        """The messages published to `projects/<p>/topics/<t>` so far, oldest first."""
        with self._lock:
            return list(self._published.get(topic_path, []))

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)


# -- Hookdeck -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HookdeckRequest:
    path: str
    headers: dict[str, str]
    body: bytes


class _HookdeckHandler(BaseHTTPRequestHandler):
    server: _HookdeckServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.server.record(HookdeckRequest(self.path, dict(self.headers.items()), body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads what was recorded, not an access log."""


class _HookdeckServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HookdeckHandler)
        self.received: list[HookdeckRequest] = []
        self._lock = threading.Lock()

    def record(self, request: HookdeckRequest) -> None:
        with self._lock:
            self.received.append(request)


@dataclass
class HookdeckPeer:
    """Hookdeck's publish endpoint on a thread: every POST answered 200 and recorded."""

    url: str = ""
    _server: _HookdeckServer | None = None

    def start(self) -> HookdeckPeer:
        self._server = _HookdeckServer()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def requests(self) -> list[HookdeckRequest]:
        assert self._server is not None
        with self._server._lock:
            return list(self._server.received)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@dataclass(frozen=True)
class Peers:
    """Every session-wide peer, and the settings that point Herald at them."""

    aws_url: str
    pubsub: PubSubPeer
    hookdeck: HookdeckPeer

    def herald_env(self) -> dict[str, str]:
        return {
            "HERALD_AWS_ENDPOINT_URL": self.aws_url,
            "HERALD_GCP_PUBSUB_ENDPOINT": self.pubsub.endpoint,
            "HERALD_HOOKDECK_BASE_URL": self.hookdeck.url,
        }
