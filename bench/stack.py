"""The real stack for the benchmarks: Kafka, PostgreSQL, the worker, the API and the receiver.

The worker is one process of every role (`worker`), or, after `start_workers(k)` with k ≥ 1,
a router and index process (`worker`, on the worker port) beside k delivering processes
(`deliver-1` ... on the ports after it), as `make run` starts them on a machine of k cores.

Everything listens on 127.0.0.1 on the usual ports plus an offset (300 unless
HERALD_BENCH_PORT_OFFSET says otherwise), so it runs beside `make run` and the tests, and
keeps its data under .data/bench/. Kafka starts from an empty log dir and the `herald`
database is recreated on every run, so each run starts from the same state. Services
come from the repository's own scripts (scripts/kafka/kafka.sh, scripts/postgres.sh);
the worker, API and receiver are subprocesses in sessions of their own (a Ctrl-C reaches
only the orchestrator, which then stops them in order). `stop()` undoes whatever `start()`
got to, and a run killed with -9 is cleaned up by the next one (from the pids file).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from pipeline.crypto import generate_key

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"
HERALD = ROOT / ".venv" / "bin" / "herald"
DEFAULT_PORT_OFFSET = 300
API_KEY = "sk_test_bench"
TENANT = "bench"
CEILING_TOPIC = "bench-ceiling"
CEILING_PARTITIONS = 6
# Settings the bench gives the worker and the API besides addresses: a 1 s delivery timeout
# (the failure scenario's slow receiver sleeps past it), a retry schedule scaled down to
# 0.5 s, 1 s, 2 s, and no auto-disable (the failing destinations must keep failing).
BENCH_SETTINGS = {
    "HERALD_DELIVERY_TIMEOUT_S": "1",
    "HERALD_RETRY_BASE_DELAY_S": "0.5",
    "HERALD_MAX_RETRIES": "3",
    "HERALD_AUTO_DISABLE_AFTER_DEAD_LETTERS": "0",
}
RECEIVER_SLOW_S = 2.0


@dataclass(frozen=True)
class Ports:
    """Where each service of the bench stack listens (all on 127.0.0.1)."""

    kafka: int
    postgres: int
    api: int
    worker: int
    receiver: int

    @classmethod
    def shifted(cls, offset: int) -> Ports:
        """The usual ports (9092, 25432, 8080, 8081, 9000) plus `offset`."""
        return cls(9092 + offset, 25432 + offset, 8080 + offset, 8081 + offset, 9000 + offset)


def ready(port: int, path: str) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (0 if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def terminate(process: subprocess.Popen[bytes]) -> None:
    """Stop a process of the stack: SIGTERM (it commits and leaves its groups), then
    SIGKILL if it has not gone within 30 s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, all threads (0 if it is gone).

    Busy time is steadier than throughput on a shared machine: a process that waits for
    a core runs slower but does not use more CPU per delivery.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # Split after the command name, which may hold spaces; utime and stime are fields 14, 15.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def runqueue_wait_seconds(pid: int) -> float:
    """Seconds the process's main thread (its event loop) has spent runnable but waiting
    for a core, so far (/proc/<pid>/task/<pid>/schedstat, second field; 0 if it is gone).
    On the shared 2-core machine this tells a loop starved of CPU from one idle in epoll;
    the other threads (libuv's pool, a helper thread) are left out, so that it compares
    with wall time."""
    try:
        return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def _is_ours(pid: int) -> bool:
    """Whether `pid` still runs one of the bench's own commands (pids get reused)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return str(ROOT).encode() in command and (b"herald" in command or b"bench." in command)


async def recreate_database(port: int) -> None:
    """An empty `herald` database on the PostgreSQL server at `port` (bench and tests)."""
    # Loopback is trusted on this development server (scripts/postgres.sh).
    connection = await asyncpg.connect(
        host="127.0.0.1", port=port, user="postgres", database="postgres"
    )
    try:
        await connection.execute("drop database if exists herald with (force)")
        await connection.execute("create database herald owner herald")
    finally:
        await connection.close()


class Stack:
    """Starts and stops the bench's services and Herald processes."""

    def __init__(self, offset: int = DEFAULT_PORT_OFFSET) -> None:
        self.ports = Ports.shifted(offset)
        self.data = ROOT / ".data" / "bench"
        self.logs = self.data / "logs"
        self.encryption_key = generate_key()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._services_started: list[str] = []
        self._logged: set[str] = set()
        self._pids_file = self.data / "pids.json"

    # -- addresses -----------------------------------------------------------------------

    @property
    def kafka_bootstrap(self) -> str:
        """host:port of the broker."""
        return f"127.0.0.1:{self.ports.kafka}"

    @property
    def database_url(self) -> str:
        """The index database."""
        return f"postgresql://herald@127.0.0.1:{self.ports.postgres}/herald"

    @property
    def api_url(self) -> str:
        """Base URL of the API."""
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def receiver_url(self) -> str:
        """Base URL of the webhook receiver."""
        return f"http://127.0.0.1:{self.ports.receiver}"

    def pid(self, name: str) -> int:
        """Pid of a running process of the stack: worker, api or receiver."""
        return self.processes[name].pid

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the worker, the API and the receiver."""
        return {name: cpu_seconds(p.pid) for name, p in self.processes.items()}

    def runqueue_wait(self) -> dict[str, float]:
        """Seconds the worker, the API and the receiver waited for a core so far."""
        return {name: runqueue_wait_seconds(p.pid) for name, p in self.processes.items()}

    def herald_env(self) -> dict[str, str]:
        """Environment of the worker and API: no HERALD_* from outside leaks in."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        return {
            **base,
            "HERALD_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "HERALD_DATABASE_URL": self.database_url,
            "HERALD_ENCRYPTION_KEYS": self.encryption_key,
            "HERALD_DEV_API_KEY": API_KEY,
            "HERALD_DEV_TENANT": TENANT,
            "HERALD_OUTBOUND_ALLOWLIST": '["127.0.0.1/32"]',
            "HERALD_API_PORT": str(self.ports.api),
            "HERALD_WORKER_PORT": str(self.ports.worker),
            "HERALD_WORKER_DATA_DIR": str(self.data / "worker"),
            **BENCH_SETTINGS,
        }

    def _service_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HERALD_KAFKA_PORT": str(self.ports.kafka),
            "HERALD_KAFKA_DATA": str(self.data / "kafka"),
            "HERALD_PG_PORT": str(self.ports.postgres),
            "HERALD_PG_DATA": str(self.data / "postgres"),
        }

    # -- start ---------------------------------------------------------------------------

    def start(self) -> None:
        """Kafka (empty), PostgreSQL (fresh database), topics, worker, API, receiver."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self._stop_leftovers()
        self._script("kafka/kafka.sh", "stop")  # a broker left over by a killed run
        shutil.rmtree(self.data / "kafka", ignore_errors=True)
        self._services_started.append("kafka/kafka.sh")
        self._script("kafka/kafka.sh", "start")
        self._services_started.append("postgres.sh")
        self._script("postgres.sh", "start")
        asyncio.run(recreate_database(self.ports.postgres))
        subprocess.run(
            [str(HERALD), "topics", "apply"],
            check=True,
            timeout=120,
            env=self.herald_env(),
            stdout=subprocess.DEVNULL,
        )
        self._create_ceiling_topic()
        self.start_workers(0)
        self._spawn("api", [str(HERALD), "api"], self.ports.api, "/readyz")
        self._spawn(
            "receiver",
            [
                str(PYTHON),
                "-m",
                "bench.receiver",
                "--port",
                str(self.ports.receiver),
                "--slow-s",
                str(RECEIVER_SLOW_S),
            ],
            self.ports.receiver,
            "/stats",
        )

    def worker_names(self) -> list[str]:
        """The running worker processes: `worker`, then any `deliver-N`."""
        return [n for n in self.processes if n == "worker" or n.startswith("deliver-")]

    def start_workers(self, delivering: int, deliver_env: dict[str, str] | None = None) -> None:
        """Start the worker processes: with `delivering` 0, one of every role; else a
        router and index process and `delivering` deliver processes, which get the extra
        settings `deliver_env`."""
        if delivering == 0:
            self._spawn("worker", [str(HERALD), "worker"], self.ports.worker, "/readyz")
            return
        command = [str(HERALD), "worker", "--role"]
        self._spawn("worker", [*command, "router,index"], self.ports.worker, "/readyz")
        for n in range(1, delivering + 1):
            port = self.ports.worker + n
            own = {**(deliver_env or {}), "HERALD_WORKER_PORT": str(port)}
            self._spawn(f"deliver-{n}", [*command, "deliver"], port, "/readyz", own)

    def restart_herald(self, env: dict[str, str]) -> None:
        """Stop the API and the all-roles worker and start them again with `env` added to
        their environment (the `traces` scenario: tracing off, then on)."""
        self._terminate("api")
        self.stop_workers()
        self._spawn("worker", [str(HERALD), "worker"], self.ports.worker, "/readyz", env)
        self._spawn("api", [str(HERALD), "api"], self.ports.api, "/readyz", env)

    def stop_workers(self) -> None:
        """Stop every worker process (SIGTERM: they commit and leave their groups)."""
        for name in reversed(self.worker_names()):
            self._terminate(name)

    def _script(self, *args: str) -> None:
        subprocess.run(
            [str(ROOT / "scripts" / args[0]), *args[1:]],
            check=True,
            env=self._service_env(),
            timeout=300,
        )

    def _create_ceiling_topic(self) -> None:
        """The topic the bare producer writes to (the broker never auto-creates topics)."""
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=self.kafka_bootstrap, request_timeout_ms=30_000)
        try:
            admin.create_topics([NewTopic(CEILING_TOPIC, CEILING_PARTITIONS, 1)])
        finally:
            admin.close()

    def _spawn(
        self,
        name: str,
        command: list[str],
        port: int,
        ready_path: str,
        env: dict[str, str] | None = None,
    ) -> None:
        log = self.logs / f"{name}.log"
        # A process started again in this run (a new worker layout) appends to its log.
        with log.open("ab" if name in self._logged else "wb") as out:
            self._logged.add(name)
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**self.herald_env(), **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        self._pids_file.write_text(json.dumps({n: p.pid for n, p in self.processes.items()}))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{tail}")
            if ready(port, ready_path):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready on 127.0.0.1:{port} after 120 s; see {log}")

    def _stop_leftovers(self) -> None:
        """Stop processes a killed earlier run left behind (by their recorded pids)."""
        if not self._pids_file.exists():
            return
        with contextlib.suppress(ValueError, OSError):
            for pid in json.loads(self._pids_file.read_text()).values():
                if _is_ours(int(pid)):
                    os.kill(int(pid), signal.SIGKILL)
        self._pids_file.unlink(missing_ok=True)

    # -- stop ----------------------------------------------------------------------------

    def _terminate(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            terminate(process)

    def stop(self) -> None:
        """Stop everything this stack started, in reverse order; safe to call twice."""
        for name in ("receiver", "api"):
            self._terminate(name)
        self.stop_workers()
        self._pids_file.unlink(missing_ok=True)
        while self._services_started:
            script = self._services_started.pop()
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._script(script, "stop")
