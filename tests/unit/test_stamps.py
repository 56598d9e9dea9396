"""SharedLookup: the stamp's end-offset look-ups are shared, one in flight, and never older
than the request that waits for one (README, Guarantees)."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.stamps import SharedLookup


async def _spin(iterations: int = 5) -> None:
    """Let the loop run a few iterations (tasks started, callbacks called)."""
    for _ in range(iterations):
        await asyncio.sleep(0)


class _Broker:
    """Look-ups that finish only when told; each answers with its own start number."""

    def __init__(self) -> None:
        self.started = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self._release: list[asyncio.Event] = []

    async def fetch(self) -> int:
        self.started += 1
        number = self.started
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        release = asyncio.Event()
        self._release.append(release)
        try:
            await release.wait()
        finally:
            self.in_flight -= 1
        return number

    async def finish_one(self) -> None:
        """Let the oldest look-up in flight answer (once it has started)."""
        await _spin()
        assert self._release, "no look-up in flight"
        self._release.pop(0).set()
        await _spin()


async def test_concurrent_requests_cause_at_most_two_look_ups() -> None:
    broker = _Broker()
    lookup = SharedLookup(broker.fetch)
    first = asyncio.create_task(lookup.get())
    await _spin()
    assert broker.started == 1
    # 100 requests arrive while the first look-up is in flight: they all share the next.
    later = [asyncio.create_task(lookup.get()) for _ in range(100)]
    await asyncio.sleep(0)
    assert broker.started == 1, "no second look-up while one is in flight"
    await broker.finish_one()
    assert await first == 1
    assert broker.started == 2, "the next look-up is sent as soon as the first returns"
    await broker.finish_one()
    assert set(await asyncio.gather(*later)) == {2}
    assert broker.started == 2
    assert broker.most_in_flight == 1


async def test_requests_of_one_loop_iteration_share_one_look_up() -> None:
    broker = _Broker()
    lookup = SharedLookup(broker.fetch)
    waiting = [asyncio.create_task(lookup.get()) for _ in range(50)]
    await broker.finish_one()
    assert set(await asyncio.gather(*waiting)) == {1}
    assert broker.started == 1


async def test_a_request_never_gets_a_look_up_that_started_before_it_arrived() -> None:
    broker = _Broker()
    lookup = SharedLookup(broker.fetch)
    arrivals: list[tuple[int, asyncio.Task[int]]] = []

    async def arrive(count: int) -> None:
        for _ in range(count):
            arrivals.append((broker.started, asyncio.create_task(lookup.get())))
            await asyncio.sleep(0)

    async def answer() -> None:
        for _ in range(6):
            await broker.finish_one()

    await asyncio.gather(arrive(40), answer())
    while any(not task.done() for _, task in arrivals):
        await broker.finish_one()
    for started_before, task in arrivals:
        assert task.result() > started_before
    assert broker.most_in_flight == 1
    assert broker.started < len(arrivals)


async def test_an_error_reaches_every_caller_of_its_round_and_the_next_round_tries_again() -> None:
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("broker away")
        return calls

    lookup = SharedLookup(flaky)
    failed = await asyncio.gather(lookup.get(), lookup.get(), return_exceptions=True)
    assert [type(f) for f in failed] == [ConnectionError, ConnectionError]
    assert await lookup.get() == 2


async def test_a_cancelled_caller_does_not_cancel_the_look_up_others_wait_for() -> None:
    broker = _Broker()
    lookup = SharedLookup(broker.fetch)
    leaving = asyncio.create_task(lookup.get())
    staying = asyncio.create_task(lookup.get())
    await asyncio.sleep(0)
    leaving.cancel()
    await broker.finish_one()
    assert await staying == 1
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_a_few_look_ups_in_flight_and_no_more() -> None:
    broker = _Broker()
    lookup = SharedLookup(broker.fetch, max_in_flight=2)
    first = asyncio.create_task(lookup.get())
    await _spin()
    # A caller of a later iteration gets a look-up of its own while a slot is free...
    second = asyncio.create_task(lookup.get())
    await _spin()
    assert broker.started == 2
    # ...and callers arriving with both slots taken share the next, sent when one returns.
    later = [asyncio.create_task(lookup.get()) for _ in range(30)]
    await _spin()
    assert broker.started == 2
    await broker.finish_one()
    assert await first == 1
    assert broker.started == 3
    await broker.finish_one()
    await broker.finish_one()
    assert await second == 2
    assert set(await asyncio.gather(*later)) == {3}
    assert broker.most_in_flight == 2
