"""Flow control for the delivery runner: one lane per destination, and the global slots.

A delivery that may be attempted joins its destination's lane (a FIFO queue, in memory)
and starts once it has, in this order:

1. one of the lane's slots: its concurrency limit, which adapts (`AdaptiveLimit`);
2. its rate token, if the destination has a `rate_limit` (a timer, no slot of anyone
   else's is held while it waits);
3. one of the process's global slots (`sink_max_in_flight`), first come first served.

So a slow or rate-limited destination holds at most its own limit of global slots. The
lane's slot and the global slot are freed as soon as the sink has answered, before the
attempt is recorded: a destination's rate is its limit ÷ its receiver's latency, never
÷ Kafka's acknowledgement time.

Each lane also keeps its destination's circuit (pipeline/circuit.py) and estimates how long
a delivery joining it now would wait (`queue_wait_s`), from its measured service time,
its limit and its rate; the policy (pipeline/policy.py) puts off a delivery whose wait
would pass a bound, and skips those that come while the circuit is open. The runner asks
`decide` of every delivery whose turn has come; everything here is in memory, per worker
process, keyed by destination ref (tenant, id, generation).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.circuit import CircuitBreakers, Outcome
from pipeline.pacing import Pacer
from pipeline.settings import Settings

# A success whose latency stays within this many times the lane's baseline (plus the
# slack below, for receivers that answer in well under a millisecond) may raise the limit.
LATENCY_TOLERANCE = 2.0
LATENCY_SLACK_S = 0.05
# How fast the baseline follows latencies above it (it drops to a lower one at once).
BASELINE_DRIFT = 0.01
SERVICE_SMOOTHING = 0.2
# Lanes idle this long (nothing queued or in flight, circuit closed) are forgotten.
LANE_IDLE_S = 600.0


class AdaptiveLimit:
    """How many deliveries one destination may have in flight: additive increase while its
    latency stays flat and the limit is in use, halved when the receiver says it is
    overloaded (a timeout, 429 or 503), at most once per round trip."""

    def __init__(self, initial: int, maximum: int) -> None:
        self._maximum = max(1, maximum)
        self.limit = float(min(max(1, initial), self._maximum))
        self.baseline_s: float | None = None
        self._last_cut_s = -math.inf

    @property
    def current(self) -> int:
        """The whole number of deliveries the lane may have in flight now."""
        return max(1, int(self.limit))

    def succeeded(self, latency_s: float, saturated: bool) -> None:
        """An attempt came back well; `saturated`: the lane was using its whole limit."""
        baseline = self.baseline_s
        if baseline is None or latency_s < baseline:
            self.baseline_s = baseline = latency_s
        else:
            self.baseline_s = baseline + (latency_s - baseline) * BASELINE_DRIFT
        if saturated and latency_s <= baseline * LATENCY_TOLERANCE + LATENCY_SLACK_S:
            self.limit = min(float(self._maximum), self.limit + 1 / self.limit)

    def overloaded(self, started_s: float) -> None:
        """An attempt started at `started_s` found the receiver overloaded. Attempts started
        before the last cut say nothing about the limit since: they do not cut again."""
        if started_s < self._last_cut_s:
            return
        self.limit = max(1.0, self.limit / 2)
        self._last_cut_s = time.monotonic()


@dataclass(eq=False)
class Job:
    """One delivery on its way through the runner: its record's place and its contents."""

    partition: Any  # the TopicPartition it came from
    offset: int
    delivery: dict[str, Any]
    destination: dict[str, Any]
    ref: str  # its destination ref: its lane
    started_s: float = 0.0
    # The trace context its record's headers carry (pipeline/tracing.py), if traced.
    trace: Any = None


@dataclass(eq=False)
class Lane:
    """One destination's queue, in-flight count, limit and measured service time."""

    limit: AdaptiveLimit
    queue: deque[Job] = field(default_factory=deque)
    in_flight: dict[Job, float] = field(default_factory=dict)  # → start time, oldest first
    service_s: float | None = None
    used_s: float = 0.0
    pacing: bool = False  # a job holds a slot waiting for its rate token: the rest queue


class Lanes:
    """Every destination lane of one worker's runner, and the global slots.

    `decide(job)` is called when a job's turn comes (it leaves its lane's queue): True to
    attempt it (it then takes its slots and `start(job)` is called), False if the runner
    dealt with it otherwise (the circuit was open, the destination is gone). The runner
    calls `finished` when the sink has answered a started job.
    """

    def __init__(
        self,
        settings: Settings,
        decide: Callable[[Job], bool],
        start: Callable[[Job], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._decide = decide
        self._start = start
        self._clock = clock
        self._lanes: dict[str, Lane] = {}
        self._ready: deque[Job] = deque()  # have their lane's slot and token; wait for global
        self._global_in_flight = 0
        self.queued = 0  # jobs in every lane's queue
        self.circuits = CircuitBreakers(
            settings.circuit_failure_threshold,
            settings.circuit_cooldown_s,
            settings.circuit_max_cooldown_s,
            clock=clock,
        )
        self._pacer = Pacer(clock=clock)

    def lane(self, ref: str) -> Lane:
        """The destination's lane (made on first use)."""
        lane = self._lanes.get(ref)
        if lane is None:
            limit = AdaptiveLimit(
                self._settings.sink_initial_in_flight_per_destination,
                self._settings.sink_max_in_flight_per_destination,
            )
            lane = self._lanes[ref] = Lane(limit)
        lane.used_s = self._clock()
        return lane

    def queue_wait_s(self, ref: str, rate_per_s: float | None) -> float:
        """How long a delivery joining the destination's lane now would wait for its turn."""
        lane = self._lanes.get(ref)
        if lane is None or (not lane.queue and len(lane.in_flight) < lane.limit.current):
            return 0.0
        ahead = len(lane.queue) + 1
        service_s = lane.service_s or 0.0
        if lane.in_flight:  # an attempt running longer than the average says more
            service_s = max(service_s, self._clock() - next(iter(lane.in_flight.values())))
        wait_s = ahead * service_s / lane.limit.current
        if rate_per_s:
            wait_s = max(wait_s, ahead / rate_per_s)
        return wait_s

    def submit(self, job: Job) -> None:
        """Queue the job in its lane; it starts when its turn and its slots come."""
        lane = self.lane(job.ref)
        lane.queue.append(job)
        self.queued += 1
        self._pump(lane)

    def finished(self, job: Job, outcome: Outcome, overloaded: bool) -> str | None:
        """The sink answered a started job: free its slots, learn from how it went, and
        start whatever may go now. Returns "open" or "closed" if the destination's circuit
        just changed to that state."""
        self._global_in_flight -= 1
        lane = self._lanes[job.ref]  # never forgotten while it has a job in flight
        saturated = len(lane.in_flight) >= lane.limit.current
        lane.in_flight.pop(job, None)
        latency_s = self._clock() - job.started_s
        if outcome is Outcome.SUCCESS:
            previous = lane.service_s
            lane.service_s = (
                latency_s
                if previous is None
                else (previous + (latency_s - previous) * SERVICE_SMOOTHING)
            )
            lane.limit.succeeded(latency_s, saturated)
        elif overloaded:
            lane.limit.overloaded(job.started_s)
        change = self.circuits.record(job.ref, outcome)
        while self._ready and self._global_in_flight < self._settings.sink_max_in_flight:
            self._go(self._ready.popleft())
        self._pump(lane)
        return change

    def _pump(self, lane: Lane) -> None:
        """Start the lane's queued jobs while it has free slots."""
        while lane.queue and not lane.pacing and len(lane.in_flight) < lane.limit.current:
            job = lane.queue.popleft()
            self.queued -= 1
            if not self._decide(job):
                continue
            lane.in_flight[job] = self._clock()  # its lane slot, held from now
            delay_s = self._pacer.delay_s(job.ref, job.destination.get("rate_limit"))
            if delay_s > 0:
                # One job at a time waits for a token; the rest wait in the queue, where
                # queue_wait_s counts them.
                lane.pacing = True
                asyncio.get_running_loop().call_later(delay_s, self._token_came, lane, job)
            else:
                self._paced(job)

    def _token_came(self, lane: Lane, job: Job) -> None:
        lane.pacing = False
        self._paced(job)
        self._pump(lane)

    def _paced(self, job: Job) -> None:
        """The job has its lane slot and rate token: a global slot, or wait for one."""
        if self._global_in_flight < self._settings.sink_max_in_flight:
            self._go(job)
        else:
            self._ready.append(job)

    def _go(self, job: Job) -> None:
        self._global_in_flight += 1
        job.started_s = self._clock()
        self._start(job)

    def drop(self, partitions: set[Any]) -> int:
        """Remove the queued jobs fetched from `partitions` (revoked: their new owner does
        them); how many."""
        dropped = 0
        for lane in self._lanes.values():
            kept = deque(job for job in lane.queue if job.partition not in partitions)
            dropped += len(lane.queue) - len(kept)
            lane.queue = kept
        self.queued -= dropped
        return dropped

    def forget_idle(self) -> int:
        """Drop lanes idle for LANE_IDLE_S with nothing queued or running; how many remain."""
        cutoff_s = self._clock() - LANE_IDLE_S
        for ref in [r for r, lane in self._lanes.items() if _idle(lane, cutoff_s)]:
            if not self.circuits.is_open(ref):
                del self._lanes[ref]
                self._pacer.forget(ref)
        return len(self._lanes)

    def snapshot(self, ref: str) -> dict[str, Any] | None:
        """The lane's state, for logs and tests."""
        lane = self._lanes.get(ref)
        if lane is None:
            return None
        return {
            "queued": len(lane.queue),
            "in_flight": len(lane.in_flight),
            "limit": lane.limit.current,
            "service_s": lane.service_s,
        }


def _idle(lane: Lane, cutoff_s: float) -> bool:
    return not lane.queue and not lane.in_flight and not lane.pacing and lane.used_s < cutoff_s
