"""The benchmark scenarios, in the order `bench.run` runs them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench.context import Bench, Outcome
from bench.scenarios import failure, fanout, ingest, latency

Scenario = Callable[[Bench], Awaitable[Outcome]]

SCENARIOS: dict[str, Scenario] = {
    "ingest": ingest.run,
    "fanout": fanout.run_fanout,
    "latency": latency.run,
    "cost": fanout.run_cost,
    "failure": failure.run_failure,
    "retry": failure.run_retry,
}
