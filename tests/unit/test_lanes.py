"""Per-destination lanes and the global slots (pipeline/lanes.py): the order slots are taken
in, what a slow or paced destination may hold, and the adaptive concurrency limit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipeline.circuit import Outcome
from pipeline.lanes import AdaptiveLimit, Job, Lanes
from pipeline.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


class Runner:
    """Stands in for the dispatcher: records what started; refuses what it is told to."""

    def __init__(self, refuse: set[int] | None = None) -> None:
        self.started: list[Job] = []
        self.decided: list[Job] = []
        self.refuse = refuse or set()
        self.started_one = asyncio.Event()

    def decide(self, job: Job) -> bool:
        self.decided.append(job)
        return job.offset not in self.refuse

    def start(self, job: Job) -> None:
        self.started.append(job)
        self.started_one.set()

    def refs(self) -> list[str]:
        return [job.ref for job in self.started]


def _lanes(runner: Runner, clock: Clock | None = None, **settings: Any) -> Lanes:
    defaults = {"sink_max_in_flight": 100, "sink_initial_in_flight_per_destination": 4}
    return Lanes(
        Settings(**{**defaults, **settings}), runner.decide, runner.start, clock or Clock()
    )


def _job(ref: str, offset: int, **destination: Any) -> Job:
    return Job("tp", offset, {"id": f"evdl_{offset}"}, {"id": ref, **destination}, ref)


def test_a_slow_destination_holds_at_most_its_own_limit_of_global_slots() -> None:
    runner = Runner()
    lanes = _lanes(runner, sink_max_in_flight=6)
    for offset in range(50):  # a stuck destination's backlog: none of them ever answers
        lanes.submit(_job("slow", offset))
    lanes.submit(_job("healthy", 100))
    assert runner.refs().count("slow") == 4  # its lane's limit
    assert runner.refs()[-1] == "healthy"  # started at once, beside the stuck ones
    assert lanes.queued == 46


def test_a_burst_to_one_destination_waits_in_its_lane_and_all_of_it_goes() -> None:
    runner = Runner()
    lanes = _lanes(runner)
    for offset in range(1000):
        lanes.submit(_job("hot", offset))
    assert runner.decided == runner.started  # nothing put off or refused
    while runner.started:
        lanes.finished(runner.started.pop(0), Outcome.SUCCESS, overloaded=False)
        assert lanes.queued >= 0
    assert lanes.queued == 0
    assert len(runner.decided) == 1000


def test_the_global_slots_go_first_come_first_served_once_a_lane_has_its_own() -> None:
    runner = Runner()
    lanes = _lanes(runner, sink_max_in_flight=2)
    for ref in ("a", "a", "b", "c"):
        lanes.submit(_job(ref, len(runner.decided)))
    assert runner.refs() == ["a", "a"]
    lanes.finished(runner.started[0], Outcome.SUCCESS, overloaded=False)
    assert runner.refs() == ["a", "a", "b"]  # b waited longer than a's next
    lanes.finished(runner.started[1], Outcome.SUCCESS, overloaded=False)
    assert runner.refs() == ["a", "a", "b", "c"]


def test_a_delivery_the_runner_deals_with_otherwise_takes_no_slot() -> None:
    runner = Runner(refuse={0, 1, 2})
    lanes = _lanes(runner, sink_max_in_flight=1)
    for offset in range(4):
        lanes.submit(_job("d", offset))
    assert [job.offset for job in runner.started] == [3]
    assert lanes.snapshot("d") == {"queued": 0, "in_flight": 1, "limit": 4, "service_s": None}


async def test_a_paced_destination_waits_for_its_token_without_a_global_slot() -> None:
    runner = Runner()
    lanes = _lanes(runner, sink_max_in_flight=1)
    for offset in range(3):  # rate 2/s: a burst of 2, then one every 0.5 s
        lanes.submit(_job("paced", offset, rate_limit=2))
    assert runner.refs() == ["paced"]  # the first token at once; it took the only slot
    lanes.finished(runner.started[0], Outcome.SUCCESS, overloaded=False)
    assert len(runner.started) == 2
    lanes.finished(runner.started[1], Outcome.SUCCESS, overloaded=False)
    # The third waits for its token, holding its lane's slot but not the global one.
    lanes.submit(_job("other", 10))
    assert runner.refs()[-1] == "other"
    lanes.finished(runner.started[-1], Outcome.SUCCESS, overloaded=False)

    runner.started_one.clear()
    await asyncio.wait_for(runner.started_one.wait(), timeout=2)
    assert len(runner.started) == 4
    assert runner.refs()[-1] == "paced"


def test_the_wait_is_estimated_from_service_time_limit_and_rate() -> None:
    clock = Clock()
    runner = Runner()
    lanes = _lanes(runner, clock, sink_initial_in_flight_per_destination=2)
    assert lanes.queue_wait_s("d", None) == 0.0  # unknown lane: no wait
    for offset in range(2):
        lanes.submit(_job("d", offset))
    clock.now_s += 1.0
    for job in list(runner.started):  # each took 1 s
        lanes.finished(job, Outcome.SUCCESS, overloaded=False)
    for offset in range(2, 12):
        lanes.submit(_job("d", offset))
    # 8 queued behind 2 in flight: the next waits 9 services of 1 s, 2 at a time.
    assert lanes.queue_wait_s("d", None) == pytest.approx(4.5)
    assert lanes.queue_wait_s("d", 0.5) == pytest.approx(18.0)  # its rate says longer
    clock.now_s += 10.0  # the two in flight have run for 10 s: the estimate follows them
    assert lanes.queue_wait_s("d", None) == pytest.approx(45.0)


def test_the_limit_grows_while_latency_stays_flat_and_the_lane_is_full() -> None:
    limit = AdaptiveLimit(initial=4, maximum=6)
    for _ in range(5):
        limit.succeeded(0.010, saturated=True)
    assert limit.current == 5  # about one more per round trip (a limit's worth of answers)
    for _ in range(100):
        limit.succeeded(0.010, saturated=False)
    assert limit.current == 5  # nothing shows more would be used
    for _ in range(100):
        limit.succeeded(0.010, saturated=True)
    assert limit.current == 6  # never past the maximum
    limit = AdaptiveLimit(initial=4, maximum=100)
    limit.succeeded(0.010, saturated=True)
    for _ in range(20):
        limit.succeeded(0.500, saturated=True)  # latency far above the baseline: no growth
    assert limit.current == 4


def test_the_limit_halves_on_overload_once_per_round_trip() -> None:
    limit = AdaptiveLimit(initial=16, maximum=100)
    limit.overloaded(started_s=0.0)
    assert limit.current == 8
    limit.overloaded(started_s=0.0)  # started before the cut: says nothing new
    assert limit.current == 8
    for _ in range(10):
        limit.overloaded(started_s=float("inf"))
    assert limit.current == 1  # never below one


def test_an_overloaded_receiver_shrinks_its_lane() -> None:
    clock = Clock()
    runner = Runner()
    lanes = _lanes(runner, clock, sink_initial_in_flight_per_destination=8)
    for offset in range(20):
        lanes.submit(_job("d", offset))
    assert len(runner.started) == 8
    lanes.finished(runner.started[0], Outcome.RETRYABLE, overloaded=True)
    snapshot = lanes.snapshot("d")
    assert snapshot is not None and snapshot["limit"] == 4
    assert snapshot["in_flight"] == 7  # nothing new starts until it is below 4
    assert len(runner.started) == 8


def test_an_idle_lane_is_forgotten_with_its_rate_bucket_unless_its_circuit_is_open() -> None:
    from pipeline.lanes import LANE_IDLE_S

    clock = Clock()
    runner = Runner()
    lanes = _lanes(runner, clock, circuit_failure_threshold=1)
    for ref in ("quiet", "broken"):
        lanes.submit(_job(ref, len(runner.started), rate_limit=5))
    lanes.finished(runner.started[0], Outcome.SUCCESS, overloaded=False)
    lanes.finished(runner.started[1], Outcome.RETRYABLE, overloaded=False)  # opens it
    clock.now_s += LANE_IDLE_S + 1
    assert lanes.forget_idle() == 1
    assert lanes.snapshot("quiet") is None and lanes.snapshot("broken") is not None
    assert "quiet" not in lanes._pacer._buckets
