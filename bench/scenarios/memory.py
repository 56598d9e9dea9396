"""Memory per destination of the running processes: worker and API RSS at 10, 10,000 and
100,000 destinations (10 and 5,000 with --quick), each size read once the destinations
are folded, the worker routes with them, and its queues are empty.

The destinations are created as the `cost` scenario creates them (one type each); no
event is published to them, so this is what the destination table costs at rest (the
`cost` scenario reads RSS again after delivering to every one of them). The in-process
figure of the same data structures is `python -m bench.memory`.
"""

from __future__ import annotations

from bench.cluster import DestinationSpec
from bench.context import Bench, BenchError, Outcome, Row
from bench.progress import progress
from bench.stack import rss_bytes

KIB = 1024
MIB = 1024 * KIB
CEILING_BYTES_PER_DESTINATION = 3_000  # issue 14: ≤ 3 KB per destination at 100,000


async def run(bench: Bench) -> Outcome:
    """RSS per process at each size, and bytes per destination above the smallest."""
    sizes = [10, 5_000] if bench.quick else [10, 10_000, 100_000]
    outcome = Outcome("memory")
    outcome.settings = {"sizes": sizes}
    existing = 0
    baseline: dict[str, int] = {}
    for size in sizes:
        specs = [DestinationSpec("ok", "mem", k, (f"mem.d{k}",)) for k in range(existing, size)]
        # Not bench.create_destinations: on a shared machine the fold may take longer than
        # its wait allows, and the sizes already measured should still be reported.
        with progress(f"{size:,} destinations: write", len(specs)) as bar:
            await bench.cluster.create_destinations(specs, bar.update_to)
        try:
            await bench.cluster.wait_folded(timeout_s=max(120.0, len(specs) / 40))
        except TimeoutError as exc:
            outcome.settings["stopped"] = f"at {size:,} destinations: {exc}"
            break
        await bench.sync_worker()
        existing = size
        await bench.settle()
        rss = {name: rss_bytes(bench.stack.pid(name)) for name in ("worker", "api")}
        baseline = baseline or rss
        outcome.figures[f"destinations_{size}"] = {"rss_bytes": rss}
        for name, value in rss.items():
            if size == sizes[0]:  # the process's own size, not a cost per destination
                outcome.rows.append(
                    Row("memory", f"{name}, {size:,} destinations", round(value / MIB), "MiB RSS")
                )
                continue
            growth = (value - baseline[name]) / (size - sizes[0])
            outcome.rows.append(
                Row(
                    "memory",
                    f"{name}, {size:,} destinations",
                    round(value / size),
                    "RSS bytes/destination",
                    CEILING_BYTES_PER_DESTINATION,
                    f"RSS {value / MIB:.0f} MiB; {growth:.0f} bytes/destination above {sizes[0]}",
                )
            )
    if not outcome.rows:
        raise BenchError("no size was measured")
    return outcome
