"""The benchmark scenarios, in the order `bench.run` runs them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench.context import Bench, Outcome
from bench.scenarios import (
    dead,
    failure,
    fanout,
    filters,
    hot,
    ingest,
    latency,
    light,
    memory,
    router,
    scale,
    source,
    stats,
    traces,
)

Scenario = Callable[[Bench], Awaitable[Outcome]]

SCENARIOS: dict[str, Scenario] = {
    "ingest": ingest.run,
    "fanout": fanout.run_fanout,
    "latency": latency.run,
    "cost": fanout.run_cost,
    "memory": memory.run,
    "light": light.run,
    "failure": failure.run_failure,
    "retry": failure.run_retry,
    # Issue 17: the same load with tracing off and at 1% sampling (it restarts the API and
    # the worker for each, and leaves them running without tracing).
    "traces": traces.run,
    # Issue 13, delivery flow control. `dead` subscribes to "*" and deletes its
    # destinations afterwards; both run last so no other scenario meets their destinations.
    "hot": hot.run,
    "dead": dead.run,
    # Issue 14: one delivering process against two; it replaces the worker processes for
    # its own layouts and starts the all-roles worker again afterwards.
    "scale": scale.run,
    # The router by itself (it stops the stack's worker while it runs). Last: it leaves a
    # backlog (its deliveries, the event-ids table to recover) that the restarted worker
    # works through for minutes; `scale` after it crawled.
    "router": router.run,
    # Issue 16: the router alone again, with 10,000 destinations, 10% of them filtered. After
    # `router`, for the same reason: it leaves a backlog for the restarted worker.
    "filters": filters.run,
    # Issue 18: a Kafka source ingested by the ingest role against a bare consume→produce
    # loop; it stops the stack's worker while it measures, like `router`.
    "source": source.run,
    # Issue 18: the statistics query over 10 million generated attempts. Last: its rows stay.
    "stats": stats.run,
}
