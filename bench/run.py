"""Entry point: `python -m bench.run [--quick] [--profile] [scenario ...]`.

Brings up the real stack on offset ports (bench.stack), runs each scenario (all of them
by default, in the order below), writes bench/results/<scenario>.json (a quick run:
bench/results/quick/<scenario>.json), prints the table, and stops everything it started,
on Ctrl-C and on errors too.

Scenarios: ingest, fanout, latency, cost, memory, light, failure, retry, hot, dead,
scale, router, filters, stats. `--quick` makes every count smaller; `--profile` records the worker
and the API with py-spy during each scenario it runs (figures measured under the profiler are
not written to bench/results/, only the profile summaries are).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
import traceback
from types import FrameType
from typing import Any

import aiohttp

from bench import report
from bench.cluster import Cluster
from bench.context import Bench, Row
from bench.profile import Profiler
from bench.scenarios import SCENARIOS
from bench.stack import DEFAULT_PORT_OFFSET, ROOT, Stack


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("scenarios", nargs="*", metavar="scenario", help=", ".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="small counts: about 7 minutes")
    parser.add_argument("--profile", action="store_true", help="py-spy the worker and the API")
    parser.add_argument(
        "--port-offset",
        type=int,
        default=DEFAULT_PORT_OFFSET,
        help=f"added to every usual port (default {DEFAULT_PORT_OFFSET})",
    )
    return parser


def say(message: str) -> None:
    """A status line on stderr (stdout carries the table)."""
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


async def _scenario(
    bench: Bench, name: str, profile: bool, facts: dict[str, Any]
) -> list[Row] | None:
    """Run one scenario; its rows, or None if it failed (the others still run)."""
    say(f"scenario {name}")
    started_at = time.time()
    load_at_start = os.getloadavg()
    profiler = None
    if profile:
        pids = {"worker": bench.stack.pid("worker"), "api": bench.stack.pid("api")}
        profiler = Profiler(pids, bench.stack.data / "profile" / name)
        profiler.start()
    try:
        outcome = await SCENARIOS[name](bench)
    except Exception:
        say(f"scenario {name} failed:\n{traceback.format_exc()}")
        return None
    finally:
        if profiler is not None:
            summaries = profiler.stop()
            for process, summary in summaries.items():
                top = ", ".join(
                    f"{c['name']} {c['share']:.0%}" for c in summary["by_component_self"][:6]
                )
                say(f"profile of the {process} ({summary['samples']} samples): {top}")
    load = {"start": list(load_at_start), "end": list(os.getloadavg())}
    if not profile:
        path = report.write(outcome, bench.stack, bench.quick, started_at, {**facts, "load": load})
        say(
            f"{name}: {time.time() - started_at:.0f} s, load average {load['start'][0]:.1f}"
            f" → {load['end'][0]:.1f}, written to {path.relative_to(ROOT)}"
        )
    print(report.table(outcome.rows), flush=True)
    return outcome.rows


async def _run(stack: Stack, args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    cluster = Cluster.of(stack)
    await cluster.start()
    rows: list[Row] = []
    failed: list[str] = []
    facts = {"machine": report.machine(), "git": report.revision()}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            bench = Bench(stack, cluster, http, args.quick, args.profile)
            for name in args.scenarios or list(SCENARIOS):
                got = await _scenario(bench, name, args.profile, facts)
                if got is None:
                    failed.append(name)
                else:
                    rows.extend(got)
    finally:
        await cluster.stop()
    return rows, failed


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM: the same orderly stop as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; 0 if every scenario produced its figures."""
    args = _parser().parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        _parser().error(
            f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    stack = Stack(args.port_offset)
    try:
        ports = stack.ports
        say(
            f"starting the stack on 127.0.0.1: Kafka :{ports.kafka}, PostgreSQL"
            f" :{ports.postgres}, API :{ports.api}, worker :{ports.worker},"
            f" receiver :{ports.receiver}"
        )
        stack.start()
        say(f"stack up in {time.monotonic() - started:.0f} s; logs in {stack.logs}")
        rows, failed = asyncio.run(_run(stack, args))
    except KeyboardInterrupt:
        say("interrupted; stopping everything")
        return 130
    finally:
        stack.stop()
    machine = report.machine()
    print()
    print(report.table(rows))
    print(
        f"\n{machine['cores']} cores ({machine['cpu']}), {machine['memory_bytes'] / 2**30:.0f} GiB,"
        f" Python {machine['python']}, Kafka {machine['kafka']};"
        f" {'quick' if args.quick else 'full'} run in {time.monotonic() - started:.0f} s"
    )
    if failed:
        say(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
