"""Results: the machine they were measured on, the JSON files, the printed table."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.context import Outcome, Row
from bench.stack import ROOT, Stack

RESULTS = ROOT / "bench" / "results"


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            [shutil.which("git") or "/usr/bin/git", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.processor()


def _memory_bytes() -> int:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return 0
    found = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


def _kafka_version() -> str:
    jars = ROOT / ".cache" / "kafka-jars"
    for jar in sorted(jars.glob("kafka_2.13-*.jar")):
        return jar.stem.removeprefix("kafka_2.13-")
    return "unknown"


def _java_version() -> str:
    try:
        done = subprocess.run(
            [shutil.which("java") or "/usr/bin/java", "-version"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    first = (done.stderr or done.stdout).splitlines()
    return first[0] if first else "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "kafka": _kafka_version(),
        "java": _java_version(),
        "packages": {
            p: _version(p) for p in ("aiohttp", "aiokafka", "faust-streaming", "orjson", "uvloop")
        },
    }


def revision() -> dict[str, Any]:
    """The git revision, and whether the work tree differed from it."""
    return {
        "revision": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def write(
    outcome: Outcome, stack: Stack, quick: bool, started_at: float, facts: dict[str, Any]
) -> Path:
    """bench/results/<scenario>.json (bench/results/quick/ for a quick run, so a smoke run
    never overwrites the full figures the README quotes). `facts` carries the machine, the
    git revision and the 1/5/15-minute load averages at the scenario's start and end (the
    machine is shared)."""
    directory = RESULTS / "quick" if quick else RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{outcome.name}.json"
    document = {
        "scenario": outcome.name,
        "mode": "quick" if quick else "full",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
        "duration_s": round(time.time() - started_at, 1),
        "rows": [_row_json(r) for r in outcome.rows],
        "figures": outcome.figures,
        "settings": {
            **outcome.settings,
            "herald_env": {
                k: v
                for k, v in stack.herald_env().items()
                if k.startswith("HERALD_")
                and k not in ("HERALD_ENCRYPTION_KEYS", "HERALD_DEV_API_KEY")
            },
        },
        **facts,
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "case": row.case,
        "value": row.value,
        "unit": row.unit,
        "ceiling": row.ceiling,
        "ratio": round(row.ratio, 3) if row.ratio is not None else None,
        "note": row.note,
    }


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"


def table(rows: list[Row]) -> str:
    """The results as a Markdown table (readable in a terminal too)."""
    header = ("scenario", "case", "figure", "unit", "ceiling / baseline", "ratio", "note")
    lines = [header]
    for row in rows:
        ratio = f"{row.ratio:.0%}" if row.ratio is not None else ""
        lines.append(
            (
                row.scenario,
                row.case,
                _number(row.value),
                row.unit,
                _number(row.ceiling) if row.ceiling else "",
                ratio,
                row.note,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if index == 0:
            out.append("| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(out)
