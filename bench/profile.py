"""Sampling profiles of the worker and the API during a scenario (py-spy), and their summary.

`python -m bench.run --profile fanout` records each Herald process with py-spy (the `bench`
extra, which `make bench` installs; not a dependency of Herald itself) and
writes the raw collapsed stacks under .data/bench/profile/ and a summary per process to
bench/results/profile/<process>.json: samples by component, and the functions with the
most samples on-CPU, by self and by inclusive count. Idle time (the event loop waiting in
epoll) and system calls made without the GIL are not sampled (`--gil`), so the shares are
shares of the process's Python CPU time.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from bench.stack import ROOT

PY_SPY = ROOT / ".venv" / "bin" / "py-spy"
SUMMARY_DIR = ROOT / "bench" / "results" / "profile"
RATE_HZ = 100
TOP = 40
FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# First match wins: (component, substring of the frame's file path).
COMPONENTS = (
    ("herald: pipeline", "/pipeline/"),
    ("herald: api", "/api/"),
    ("faust/mode", "/faust/"),
    ("faust/mode", "/mode/"),
    ("aiokafka", "/aiokafka/"),
    ("kafka-python", "/kafka/"),
    ("aiohttp", "/aiohttp/"),
    ("yarl/multidict", "/yarl/"),
    ("yarl/multidict", "/multidict/"),
    ("logging", "/logging/"),
    ("asyncpg", "/asyncpg/"),
    ("prometheus", "/prometheus_client/"),
    ("asyncio", "/asyncio/"),
    ("ulid", "/ulid/"),
)


class Profiler:
    """py-spy recording each given process until `stop()`."""

    def __init__(self, pids: dict[str, int], out_dir: Path) -> None:
        if not PY_SPY.exists():
            raise RuntimeError(f"{PY_SPY} not found: `make .venv/.bench-installed` first")
        self._pids = pids
        self._out_dir = out_dir
        self._recorders: dict[str, subprocess.Popen[bytes]] = {}

    def raw_path(self, name: str) -> Path:
        """Where the collapsed stacks of process `name` go."""
        return self._out_dir / f"{name}.txt"

    def start(self) -> None:
        """Start one recorder per process."""
        self._out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self._pids.items():
            log = (self._out_dir / f"{name}.log").open("wb")
            self._recorders[name] = subprocess.Popen(
                [
                    str(PY_SPY),
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(RATE_HZ),
                    "--format",
                    "raw",
                    # Samples holding the GIL only: Python's own CPU, not waits in epoll or
                    # in a socket write that the busy machine delayed.
                    "--gil",
                    "--full-filenames",
                    "--nonblocking",
                    "--output",
                    str(self.raw_path(name)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()

    def stop(self) -> dict[str, dict[str, Any]]:
        """Stop the recorders (SIGINT makes py-spy write its file); the summaries."""
        for recorder in self._recorders.values():
            if recorder.poll() is None:
                recorder.send_signal(signal.SIGINT)
        for recorder in self._recorders.values():
            try:
                recorder.wait(timeout=60)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait(timeout=10)
        summaries = {}
        SUMMARY_DIR.mkdir(parents=True, exist_ok=True)
        for name in self._recorders:
            path = self.raw_path(name)
            if path.exists():
                summaries[name] = summarize(path.read_text())
                (SUMMARY_DIR / f"{name}.json").write_text(_json(summaries[name]))
        self._recorders.clear()
        return summaries


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2) + "\n"


def _frame(raw: str) -> tuple[str, str]:
    """(`function (short/path.py)`, full path) of one collapsed-stack frame."""
    found = FRAME.match(raw.strip())
    if found is None:
        return raw.strip(), ""
    path = found.group("file")
    short = "/".join(path.split("/")[-2:])
    return f"{found.group('function')} ({short})", path


def component(path: str) -> str:
    """The library (or Herald package) a source file belongs to."""
    for name, marker in COMPONENTS:
        if marker in path:
            return name
    if "site-packages" in path:
        return "other libraries"
    return "python stdlib / other" if path else "native"


def summarize(collapsed: str) -> dict[str, Any]:
    """Samples by component (self), top functions by self and by inclusive samples."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    components: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        leaf, leaf_path = frames[-1]
        self_counts[leaf] += count
        components[component(leaf_path)] += count
        for name in {name for name, _ in frames}:
            inclusive[name] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"name": name, "samples": n, "share": round(n / total, 4)}
            for name, n in counter.most_common(TOP)
        ]

    return {
        "samples": total,
        "rate_hz": RATE_HZ,
        "by_component_self": share(components),
        "top_self": share(self_counts),
        "top_inclusive": share(inclusive),
    }
