"""No port Herald's scripts, tests or bench listen on lies in the kernel's ephemeral range.

The kernel picks 32768-60999 for outgoing connections; a listening port there can be held
by a connection in TIME_WAIT at the moment a service starts (the test RabbitMQ's
distribution port, then 20000 above its AMQP port, once made 110 tests error at setup).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bench.stack import DEFAULT_PORT_OFFSET, Ports
from tests.ports import EPHEMERAL_FIRST, LARGEST_OFFSET, test_ports

ROOT = Path(__file__).resolve().parents[2]
EPHEMERAL = range(EPHEMERAL_FIRST, 61000)
# Offsets the sessions on one machine use (make test-faults defaults to 500, the bench 300).
OFFSETS = [0, 300, 500, *range(1000, LARGEST_OFFSET + 1, 500)]
NUMBER = re.compile(r"(?<![\w.])(\d{5})(?![\w.])")
# The range's own bounds, where a comment or a check names them.
BOUNDS = {"32768", "60999"}
# A line that names a port: "port", "listen", "bind", or host:NNNNN.
PORTISH = re.compile(r"(?i)port|listen|bind|[\w\]]:\d{5}\b")


def _sources() -> list[Path]:
    """Makefile, scripts/, tests/ and bench/ (but this file, whose examples are ports)."""
    files = [ROOT / "Makefile"]
    for folder in ("scripts", "tests", "bench"):
        files += [
            path
            for path in (ROOT / folder).rglob("*")
            if path.is_file() and path.suffix in {"", ".sh", ".py", ".properties", ".yaml"}
        ]
    return [path for path in files if path != Path(__file__).resolve()]


def ephemeral_ports_named(text: str) -> list[tuple[int, str]]:
    """(line number, line) of each line naming a port number in the ephemeral range."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not PORTISH.search(line):
            continue
        if any(int(n) in EPHEMERAL for n in set(NUMBER.findall(line)) - BOUNDS):
            found.append((number, line.strip()))
    return found


def test_the_scan_recognises_a_port_in_the_ephemeral_range() -> None:
    # The numbers are computed, so this file does not itself name an ephemeral port.
    pg, rabbit, dist = EPHEMERAL_FIRST + 21561, EPHEMERAL_FIRST + 2904, EPHEMERAL_FIRST + 22904
    assert ephemeral_ports_named(f"PORT=${{HERALD_PG_PORT:-{pg}}}\nx = 60000\n") == [
        (1, f"PORT=${{HERALD_PG_PORT:-{pg}}}")
    ]
    assert ephemeral_ports_named(f"RABBITMQ_PORT = {rabbit} + OFFSET")
    assert ephemeral_ports_named(f'url = "127.0.0.1:{dist}"')
    assert not ephemeral_ports_named("log.retention.check.interval.ms=60000")


def test_no_script_test_or_bench_file_names_an_ephemeral_port() -> None:
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in _sources()
        if (found := ephemeral_ports_named(path.read_text(errors="replace")))
    }
    assert offenders == {}


@pytest.mark.parametrize("offset", OFFSETS)
def test_test_ports_stay_below_the_ephemeral_range(offset: int) -> None:
    ports = test_ports(offset).all()
    assert max(ports) < EPHEMERAL_FIRST
    assert len(set(ports)) == len(ports)


def test_sessions_on_different_offsets_share_no_port() -> None:
    owner: dict[int, int] = {}
    for offset in OFFSETS:
        for port in test_ports(offset).all():
            assert owner.setdefault(port, offset) == offset, f"{port}: {owner[port]}, {offset}"


def test_bench_and_dev_ports_stay_below_the_ephemeral_range() -> None:
    for offset in (0, DEFAULT_PORT_OFFSET):
        ports = Ports.shifted(offset)
        assert max(ports.kafka + 1, ports.postgres, ports.api, ports.receiver) < EPHEMERAL_FIRST


def _rabbitmq_script(port: int) -> subprocess.CompletedProcess[str]:
    # An unknown command: the script checks its ports first, then prints its usage.
    return subprocess.run(
        [str(ROOT / "scripts" / "rabbitmq.sh"), "no-such-command"],
        env={"PATH": "/usr/bin:/bin", "HERALD_RABBITMQ_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_rabbitmq_refuses_distribution_ports_in_the_ephemeral_range() -> None:
    # The dev node: AMQP 5672, distribution 25672, CLI tools 25673-25682.
    assert _rabbitmq_script(5672).returncode == 2
    refused = _rabbitmq_script(15672)  # distribution 35672
    assert refused.returncode == 1
    assert "ephemeral range" in refused.stderr


def test_apt_waits_for_a_locked_dpkg(tmp_path: Path) -> None:
    """apt_install runs apt-get (here a stub recording its arguments) with a lock timeout."""
    calls = tmp_path / "calls"
    for name, body in (("apt-get", f'echo "$*" >>{calls}'), ("dpkg-query", "exit 1")):
        (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / name).chmod(0o755)
    (tmp_path / "id").write_text("#!/bin/sh\necho 0\n")  # as root: no sudo
    (tmp_path / "id").chmod(0o755)
    subprocess.run(
        ["bash", "-c", f"source {ROOT}/scripts/lib.sh; apt_install some-package"],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        check=True,
        timeout=30,
    )
    lines = calls.read_text().splitlines()
    assert [line.split()[2] for line in lines] == ["update", "install"]
    assert all(line.startswith("-o DPkg::Lock::Timeout=600 ") for line in lines)
