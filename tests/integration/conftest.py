"""Real services for the integration tests, started once per session by these fixtures.

Kafka (KRaft, from the Maven Central jars), PostgreSQL and RabbitMQ (Debian's packages)
run on test ports (tests/ports.py) with their data under .data/test/; Kafka starts from an
empty log dir and the `herald` database is created anew every session, so no test sees
what an earlier session left. The Herald worker and API run as real subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from api.auth import hash_key
from bench.stack import recreate_database
from pipeline.crypto import generate_key
from tests.integration.api_client import Api
from tests.integration.broker_tls import BrokerTls
from tests.integration.peers import HookdeckPeer, Peers, PubSubPeer, start_moto, stop_process
from tests.ports import test_ports
from tests.support import Receiver

ROOT = Path(__file__).resolve().parents[2]
# Two test sessions on one machine (say, two checkouts) use different offsets.
OFFSET = int(os.environ.get("HERALD_TEST_PORT_OFFSET", "0"))
TEST_DATA = ROOT / ".data" / (f"test-{OFFSET}" if OFFSET else "test")
PORTS = test_ports(OFFSET)
KAFKA_PORT = PORTS.kafka
PG_PORT = PORTS.postgres
RABBITMQ_PORT = PORTS.rabbitmq
API_PORT = PORTS.api
WORKER_PORT = PORTS.worker
DEV_KEY = "sk_test_integration"
OTHER_TENANT_KEY = "sk_test_other_tenant"
PUBLISH_ONLY_KEY = "sk_test_publish_only"
# The one key with a request rate limit (the stack leaves every other key unlimited).
RATE_LIMITED_KEY = "sk_test_rate_limited"
RATE_LIMIT = {"rate_limit_per_s": 0.5, "rate_limit_burst": 3}
# A tenant of its own for the schema fuzzer, so what it creates never sees other tests' events.
FUZZ_KEY = "sk_test_fuzz"
# The platform key (the tenants API; Herald-Tenant) and the portal sessions' signing key.
PLATFORM_KEY = "sk_test_platform"
PORTAL_SIGNING_KEY = "portal-signing-key-of-the-test-stack-0123456789"
# Debian's package: Playwright's own browser download is not reachable where CI runs.
CHROMIUM = "/usr/bin/chromium"
# The broker's SASL_SSL listener, for tests/integration/test_source_tls.py.
BROKER_TLS = BrokerTls(TEST_DATA / "kafka-tls")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)
    # Tests marked end_of_session go last, in their own order (a stable sort).
    items.sort(key=lambda item: item.get_closest_marker("end_of_session") is not None)


def _script(*args: str, env: dict[str, str]) -> None:
    subprocess.run(
        [str(ROOT / "scripts" / args[0]), *args[1:]],
        check=True,
        env={**os.environ, **env},
        timeout=300,
    )


@dataclass(frozen=True)
class Services:
    """Where the session's services listen."""

    kafka_bootstrap: str
    database_url: str
    amqp_url: str


def service_env() -> dict[str, dict[str, str]]:
    """The environment of each service script, by script."""
    return {
        "kafka/kafka.sh": {
            "HERALD_KAFKA_PORT": str(KAFKA_PORT),
            "HERALD_KAFKA_CONTROLLER_PORT": str(PORTS.kafka_controller),
            "HERALD_KAFKA_DATA": str(TEST_DATA / "kafka"),
            **BROKER_TLS.kafka_env(PORTS.kafka_sasl_ssl),
        },
        "postgres.sh": {
            "HERALD_PG_PORT": str(PG_PORT),
            "HERALD_PG_DATA": str(TEST_DATA / "postgres"),
        },
        "rabbitmq.sh": {
            "HERALD_RABBITMQ_PORT": str(RABBITMQ_PORT),
            "HERALD_RABBITMQ_DIST_PORT": str(PORTS.rabbitmq_dist),
            "HERALD_RABBITMQ_DATA": str(TEST_DATA / "rabbitmq"),
        },
    }


def _start_services(started: contextlib.ExitStack) -> None:
    """Start each service, registering its stop with `started` as soon as it is asked for,
    so a session that fails half-way stops whatever it got to."""
    env = service_env()
    _script("kafka/kafka.sh", "stop", env=env["kafka/kafka.sh"])  # left over by a killed run
    shutil.rmtree(TEST_DATA / "kafka", ignore_errors=True)
    BROKER_TLS.write()
    for script in ("kafka/kafka.sh", "postgres.sh", "rabbitmq.sh"):
        started.callback(_script, script, "stop", env=env[script])
        _script(script, "start", env=env[script])
    asyncio.run(recreate_database(PG_PORT))
    subprocess.run(
        [str(ROOT / ".venv/bin/herald"), "topics", "apply"],
        check=True,
        timeout=60,
        env={**os.environ, "HERALD_KAFKA_BOOTSTRAP": f"127.0.0.1:{KAFKA_PORT}"},
    )


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    with contextlib.ExitStack() as started:  # stops in reverse order, whatever happens
        _start_services(started)
        yield Services(
            f"127.0.0.1:{KAFKA_PORT}",
            f"postgresql://herald@127.0.0.1:{PG_PORT}/herald",
            f"amqp://guest:guest@127.0.0.1:{RABBITMQ_PORT}/",
        )


def herald_env(services: Services, **extra: str) -> dict[str, str]:
    """Environment for a Herald process of the test stack."""
    return {
        **os.environ,
        "HERALD_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "HERALD_DATABASE_URL": services.database_url,
        "HERALD_ENCRYPTION_KEYS": ENCRYPTION_KEY,
        "HERALD_DEV_API_KEY": DEV_KEY,
        "HERALD_DEV_TENANT": "dev",
        "HERALD_API_KEYS": json.dumps(
            [
                {"key_sha256": hash_key(OTHER_TENANT_KEY), "tenant": "other", "role": "manage"},
                {"key_sha256": hash_key(PUBLISH_ONLY_KEY), "tenant": "dev", "role": "publish"},
                {"key_sha256": hash_key(RATE_LIMITED_KEY), "tenant": "limited", **RATE_LIMIT},
                {"key_sha256": hash_key(FUZZ_KEY), "tenant": "fuzz", "role": "manage"},
                {"key_sha256": hash_key(PLATFORM_KEY), "role": "platform"},
            ]
        ),
        "HERALD_PORTAL_SIGNING_KEY": PORTAL_SIGNING_KEY,
        "HERALD_OUTBOUND_ALLOWLIST": '["127.0.0.1/32"]',
        "HERALD_API_PORT": str(API_PORT),
        "HERALD_WORKER_PORT": str(WORKER_PORT),
        "HERALD_RETRY_BASE_DELAY_S": "0.2",
        "HERALD_MAX_RETRIES": "3",
        "HERALD_AUTO_DISABLE_AFTER_DEAD_LETTERS": "2",
        "HERALD_DELIVERY_TIMEOUT_S": "2",
        **extra,
    }


ENCRYPTION_KEY = generate_key()
# The session stack's own limits (not the fault suite's workers, which keep the defaults):
# small enough for test_destination_protection to reach, and a circuit breaker that no
# other test trips (none fails one destination 10 times in a row).
STACK_LIMITS = {
    "HERALD_CIRCUIT_FAILURE_THRESHOLD": "10",
    "HERALD_CIRCUIT_COOLDOWN_S": "1",
    "HERALD_CIRCUIT_MAX_COOLDOWN_S": "4",
    "HERALD_SINK_MAX_IN_FLIGHT": "100",
    "HERALD_SINK_MAX_QUEUE_WAIT_S": "5",
}


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _wait_ready(process: subprocess.Popen[bytes], port: int, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited ({process.returncode}):\n{log.read_text()[-4000:]}")
        if _ready(port):
            return
        time.sleep(0.2)
    raise RuntimeError(f"not ready on port {port} after {timeout_s}s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def extra_api(services: Services, name: str, port: int, **env: str) -> Iterator[str]:
    """One more API process beside the stack's (its log: logs/<name>.log); its URL."""
    log = TEST_DATA / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(ROOT / ".venv/bin/herald"), "api"],
            env=herald_env(services, HERALD_API_PORT=str(port), **env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(process, port, log, timeout_s=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _start_herald(role: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(ROOT / ".venv/bin/herald"), role], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return process


@dataclass(frozen=True)
class Stack:
    """A running worker and API."""

    api_url: str
    worker_url: str
    api_key: str
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, compare=False)
    env: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def kill_and_restart_worker(self) -> None:
        """SIGKILL the worker, as a crash would, and start another; returns once it is ready."""
        old = self.processes["worker"]
        old.send_signal(signal.SIGKILL)
        old.wait(timeout=30)
        log = self.logs / "worker.log"
        self.processes["worker"] = _start_herald("worker", WORKER_PORT, self.env, log)
        _wait_ready(self.processes["worker"], WORKER_PORT, log, timeout_s=120)


@pytest.fixture(scope="session")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    """moto's server, a Pub/Sub Publisher and a Hookdeck endpoint for the whole session."""
    with contextlib.ExitStack() as started:  # a peer that fails to start stops the others
        moto, aws_url = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
        started.callback(stop_process, moto)
        pubsub = PubSubPeer().start()
        started.callback(pubsub.stop)
        hookdeck = HookdeckPeer().start()
        started.callback(hookdeck.stop)
        yield Peers(aws_url, pubsub, hookdeck)


def _stop_processes(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        process.send_signal(signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def stack(services: Services, peers: Peers) -> Iterator[Stack]:
    logs = TEST_DATA / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for role in ("worker", "api"):
        (logs / f"{role}.log").unlink(missing_ok=True)
    env = herald_env(services, **peers.herald_env(), **STACK_LIMITS)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    with contextlib.ExitStack() as started:  # a worker up and an API failing: both stop
        started.callback(_stop_processes, processes)
        for role, port in (("worker", WORKER_PORT), ("api", API_PORT)):
            log = logs / f"{role}.log"
            processes[role] = _start_herald(role, port, env, log)
            _wait_ready(processes[role], port, log, timeout_s=120)
        yield Stack(
            f"http://127.0.0.1:{API_PORT}",
            f"http://127.0.0.1:{WORKER_PORT}",
            DEV_KEY,
            logs,
            processes,
            env,
        )


async def _api(stack: Stack, key: str) -> AsyncIterator[Api]:
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(base_url=stack.api_url, headers=headers) as session:
        client = Api(session)
        yield client
        await client.delete_created()


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Api]:
    async for client in _api(stack, stack.api_key):
        yield client


@pytest.fixture
async def other_tenant(stack: Stack) -> AsyncIterator[Api]:
    async for client in _api(stack, OTHER_TENANT_KEY):
        yield client


@pytest.fixture
async def publisher(stack: Stack) -> AsyncIterator[Api]:
    async for client in _api(stack, PUBLISH_ONLY_KEY):
        yield client


@pytest.fixture
async def platform(stack: Stack) -> AsyncIterator[Api]:
    """A client with the platform key (send Herald-Tenant per call to act for a tenant)."""
    async for client in _api(stack, PLATFORM_KEY):
        yield client


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's chromium driven by Playwright, for the browser tests (the portal, /docs/)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


def page_problems(page: Page) -> list[str]:
    """Script errors and console errors of `page` (CSP refusals included) as they come; a
    refused API call's network error line is expected and left out."""
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:
            problems.append(message.text)

    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", console)
    return problems
