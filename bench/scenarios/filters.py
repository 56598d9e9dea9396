"""Scenario `filters`: events routed per second with 10,000 destinations, 10% of which carry
a content filter, against the same destinations without filters.

10,000 webhook destinations subscribe to 1,000 event types, 10 to each. N events (10,000
quick, 50,000 full) spread over those types are written straight into `events`, and a
router by itself routes them, measured as scenario `router` measures it (its preload, router
process and measurement are reused): each event matches 10 destinations. Case `unfiltered`:
no destination has a filter (10 deliveries per event). Case `filtered`: one destination of
each type (10%) gets FILTER by an update change (folded by the first case's router
process, whose worker role runs the fold agent too), and N more events are routed by a new
router process; their
`status` and `total` make a quarter of them pass, so about 9.25 deliveries per event. The
deliveries are never sent: the destinations are deleted before the stack's worker starts
again, and it starts after them.
"""

from __future__ import annotations

import subprocess
from typing import Any

from bench.cluster import DestinationSpec
from bench.context import Bench, Outcome, Row
from bench.progress import progress
from bench.scenarios import router
from bench.stack import terminate
from pipeline.topics import DELIVERIES, EVENTS

DESTINATIONS = 10_000
TYPES = 1_000
FILTERED_EVERY = 10  # one destination in ten carries a filter
FILTER = {"data": {"status": "shipped", "total": {"$gte": 100}}}
STATUSES = ("shipped", "paid")
GROUP = "filters"
SINKS_GROUP = "herald-sinks"  # the delivery runner's consumer group
INDEXER_GROUP = "herald-indexer"


def _type(n: int) -> str:
    return f"filters.t{n % TYPES}"


def _data(n: int) -> dict[str, Any]:
    """Half shipped, half of those with a total of 100 or more: a quarter pass FILTER."""
    return {
        "n": n,
        "status": STATUSES[(n // TYPES) % 2],
        "total": 50 + 100 * ((n // (2 * TYPES)) % 2),
        "pad": router.PAD,
    }


async def run(bench: Bench) -> Outcome:
    """Both cases with the stack's worker stopped; it runs again afterwards."""
    count = bench.size(10_000, 50_000)
    outcome = Outcome("filters")
    outcome.settings = {
        "events": count,
        "destinations": DESTINATIONS,
        "event_types": TYPES,
        "filtered_share": 1 / FILTERED_EVERY,
        "filter": FILTER,
        "publisher_ids": True,
    }
    specs = [DestinationSpec("ok", GROUP, i, (_type(i),)) for i in range(DESTINATIONS)]
    created = await bench.create_destinations(specs, label="filters destinations")
    await bench.settle()
    router.stop_worker(bench)
    process: subprocess.Popen[bytes] | None = None
    try:
        for case in ("unfiltered", "filtered"):
            if process is not None:  # its fold agent folds the filters in, then it stops
                await _add_filters(bench, created[::FILTERED_EVERY])
                terminate(process)
            # As in `router`: each case's router starts with the whole backlog waiting.
            await router.preload(bench, f"filters_{case}", count, _type, _data)
            process = router.start_router(bench)
            outcome.figures[case] = await router.measure(bench, process, count)
        await bench.cluster.delete_destinations(created)
        await bench.cluster.wait_folded(timeout_s=120)
        await _skip_the_backlog(bench)
    finally:
        if process is not None:
            terminate(process)
        router.start_worker(bench)
    _rows(outcome)
    await router.worker_ready(bench, router.WORKER_READY_S)
    return outcome


async def _skip_the_backlog(bench: Bench) -> None:
    """The stack's worker starts after the deliveries routed here (and the indexer after
    their events): they would all be canceled, an attempt record each, which on a busy
    machine made the restarted worker time out writing them and stop."""
    await bench.cluster.skip_to_end(SINKS_GROUP, [DELIVERIES])
    await bench.cluster.skip_to_end(INDEXER_GROUP, [EVENTS, DELIVERIES])


async def _add_filters(bench: Bench, destination_ids: list[str]) -> None:
    await bench.cluster.update_destinations(destination_ids, {"filter": FILTER})
    with progress("filters: fold", bench.cluster.folded_expected) as bar:
        await bench.cluster.wait_folded(timeout_s=120, on_progress=bar.update_to)


def _rows(outcome: Outcome) -> None:
    unfiltered, filtered = outcome.figures["unfiltered"], outcome.figures["filtered"]
    for case, got in (("no filters", unfiltered), ("10% of them filtered", filtered)):
        outcome.rows.append(
            Row(
                "filters",
                f"10,000 destinations, {case}",
                got["events_per_s"],
                "events/s",
                unfiltered["events_per_s"],
                f"vs no filters; {got['cpu_ms_per_event']} ms CPU/event;"
                f" {got['deliveries']} deliveries",
            )
        )
