"""Fault tests: the real services of tests/integration, and Herald processes to kill.

Run by `make test-faults` (not by `make test`: each scenario takes tens of seconds). Every
scenario starts its own worker and API processes with a fresh app id, so each has its own
consumer groups, and kills them with SIGKILL as a crash would.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import PORTS, ROOT, TEST_DATA, Services, _wait_ready, herald_env
from tests.integration.conftest import services as services

RESULTS: list[dict[str, object]] = []


@dataclass
class Herald:
    """Worker and API processes of one scenario, started and killed on demand."""

    services: Services
    app_id: str
    base_port: int
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # name → (command, offset, its arguments)
    roles: dict[str, tuple[str, int, tuple[str, ...]]] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)  # a scenario's own settings

    def env(self, port: int) -> dict[str, str]:
        return herald_env(
            self.services,
            HERALD_APP_ID=self.app_id,
            HERALD_API_PORT=str(port),
            HERALD_WORKER_PORT=str(port),
            HERALD_RETRY_BASE_DELAY_S="0.5",
            HERALD_MAX_RETRIES="5",
            HERALD_AUTO_DISABLE_AFTER_DEAD_LETTERS="0",
            HERALD_CONSUMER_SESSION_TIMEOUT_S="6",
            **self.extra_env,
        )

    def start(self, name: str, role: str, offset: int, *args: str) -> str:
        """Start `herald <role> <args>` on base_port + offset; its URL once it is ready."""
        port = self.base_port + offset
        log = self.log(name)
        with log.open("ab") as out:
            process = subprocess.Popen(
                [str(ROOT / ".venv/bin/herald"), role, *args],
                env=self.env(port),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes[name] = process
        self.roles[name] = (role, offset, args)
        _wait_ready(process, port, log, timeout_s=120)
        return f"http://127.0.0.1:{port}"

    def restart_exited(self) -> list[str]:
        """Start again every process that exited on its own, non-zero (as a production
        supervisor would: the worker exits when the broker will not take its records);
        a process killed by a signal stays down. The names restarted."""
        exited = [n for n, p in self.processes.items() if (p.poll() or 0) > 0]
        for name in exited:
            del self.processes[name]
            role, offset, args = self.roles[name]
            self.start(name, role, offset, *args)
        return exited

    def log(self, name: str) -> Path:
        """The log file of process `name`."""
        return self.logs / f"{self.app_id}-{name}.log"

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()


@pytest.fixture
def herald(services: Services) -> Iterator[Herald]:
    logs = TEST_DATA / "logs" / "faults"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    # One app id (so one set of consumer groups) for every scenario: each scenario starts
    # where the last one left its offsets, instead of re-routing everything before it.
    app_id = "herald-faults"
    instance = Herald(services, app_id, PORTS.faults, logs)
    yield instance
    instance.stop_all()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    # out_of_order: the per-key ordering scenario's (test_ordering_crash.py); "-" elsewhere
    columns = (
        "scenario",
        "sent",
        "acknowledged",
        "delivered",
        "lost",
        "duplicated",
        "out_of_order",
    )
    terminalreporter.write_sep("=", "fault scenarios")
    terminalreporter.write_line(" | ".join(f"{c:>14}" for c in columns))
    for row in RESULTS:
        terminalreporter.write_line(" | ".join(f"{row.get(c, '-')!s:>14}" for c in columns))
    out = ROOT / "bench" / "results" / "faults.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"scenarios": RESULTS, "subscribers_per_event": 3}, indent=2) + "\n")
    terminalreporter.write_line(f"written to {out.relative_to(ROOT)}")
