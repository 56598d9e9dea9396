"""Memory per destination, in-process: `python -m bench.memory [--out PATH] [N ...]`.

Builds what a process holds per destination from N realistic records (a create and a
`verified` change folded, as the API and the bench write them, fed to a DestinationView
as its follow loop would; in a worker also the fold agent's table of them) and reports
bytes per destination by tracemalloc and by RSS growth. Each figure is measured in a
fresh subprocess (tracemalloc inflates RSS, so RSS is read without it). The
stack figure (worker and API processes) is the `memory` scenario of `bench.run`.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline import ids
from pipeline.crypto import Sealer
from pipeline.destinations import encode, fold
from pipeline.signing import generate_secret
from pipeline.timeutil import now_iso
from pipeline.view import DestinationView

SIZES = (10, 10_000, 100_000)
PARTITIONS = 3
TENANTS = 10


def records(count: int) -> Iterator[tuple[bytes, bytes, int, int]]:
    """(key, value, partition, offset) of the `destinations` records of `count`
    destinations: each created with a sealed secret and then verified; the value as the
    fold agent's table keeps it."""
    sealer = Sealer(base64.b64encode(b"k" * 32).decode())
    offsets = [0] * PARTITIONS
    for k in range(count):
        tenant = f"tenant_{k % TENANTS}"
        destination_id = ids.new_id(ids.DESTINATION)
        key = ids.scoped(tenant, destination_id).encode()
        partition = k % PARTITIONS
        fields = {
            "tenant": tenant,
            "name": f"bench cost {k}",
            "description": None,
            "type": "webhook",
            "events": [f"cost.d{k}"],
            "metadata": {},
            "rate_limit": None,
            "config": {"url": f"http://127.0.0.1:8090/hook/cost/{k}"},
            "sealed": sealer.seal({"secret": generate_secret()}, destination_id),
            "routes_from": {str(p): 1000 for p in range(PARTITIONS)},
        }
        record = None
        for op, extra in (("create", {"fields": fields}), ("verified", {})):
            change = {"change_id": ids.new_id(ids.CHANGE), "op": op, "at": now_iso(), **extra}
            record = fold(record, {**change, "destination_id": destination_id})
            yield key, encode(record), partition, offsets[partition]
            offsets[partition] += 1


def rss_bytes() -> int:
    """This process's resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(count: int, process: str, traced: bool) -> float:
    """Bytes per destination in this process: the view alone (`api`), or the view and the
    fold agent's table beside it (`worker`: key → value bytes, what Faust's memory store
    holds, written by the fold before the view reads the record). Traced: tracemalloc's
    count of what stays allocated; else the growth of RSS."""
    view = DestinationView("unused:9092")
    table: dict[bytes, bytes | None] = {}
    if process == "worker":
        view.share_with(table)  # as the fold agent does
    gc.collect()
    if traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if traced else rss_bytes()
    for key, value, partition, offset in records(count):
        if process == "worker":
            table[key] = value
        # The view reads its own copy from the topic.
        view._apply(key, bytes(memoryview(value)), partition, offset)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if traced else rss_bytes()
    assert len(view.all()) == count
    return (after - before) / count


def run(sizes: list[int]) -> dict[str, Any]:
    """Every size, each figure in a fresh interpreter."""
    results: dict[str, Any] = {}
    for count in sizes:
        figures: dict[str, int] = {}
        for process in ("api", "worker"):
            for mode in ("tracemalloc", "rss"):
                out = subprocess.run(
                    [sys.executable, "-m", "bench.memory", "--one", str(count), process, mode],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                figures[f"{process}_{mode}_bytes"] = round(json.loads(out))
        results[str(count)] = figures
        print(f"{count:>7} destinations: {figures}", file=sys.stderr)
    return results


def main() -> None:
    """Parse arguments; print (and optionally write) the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sizes", nargs="*", type=int, default=list(SIZES))
    parser.add_argument("--out", type=Path, help="write the JSON here too")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        count, process, mode = args.one
        print(json.dumps(measure(int(count), process, traced=mode == "tracemalloc")))
        return
    report = {
        "what": "bytes per destination held by an API process (the view) and a worker "
        "(the view and the fold agent's table), by tracemalloc and by RSS growth",
        "python": sys.version.split()[0],
        "sizes": run(args.sizes),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
