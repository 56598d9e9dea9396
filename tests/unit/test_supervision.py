"""Consume loops never die silently: restarted with backoff, or the worker is stopped, and
/readyz sees a loop that is down or stuck (pipeline/supervision.py)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pipeline.health import health_routes
from pipeline.supervision import SupervisedLoop


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


async def test_a_failing_loop_is_restarted_after_its_reset_then_gives_up() -> None:
    runs: list[str] = []
    gave_up: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def body() -> None:
        runs.append("run")
        raise ConnectionError("broker gone")

    async def reset() -> None:
        runs.append("reset")

    async def give_up(exc: BaseException) -> None:
        gave_up.set_result(exc)

    loop = SupervisedLoop("index", body, give_up, max_restarts=2, backoff_s=0.0, reset=reset)
    loop.start()
    reason = await asyncio.wait_for(gave_up, 5)
    assert isinstance(reason, ConnectionError)
    assert runs == ["run", "reset", "run", "reset", "run"]
    assert not loop.alive
    await loop.stop()


async def test_a_loop_that_returns_is_a_failure_too() -> None:
    gave_up: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def body() -> None:
        return None

    async def give_up(exc: BaseException) -> None:
        gave_up.set_result(exc)

    loop = SupervisedLoop("delivery", body, give_up, max_restarts=0)
    loop.start()
    assert "delivery" in str(await asyncio.wait_for(gave_up, 5))
    await loop.stop()


async def test_readyz_fails_while_a_loop_is_stuck_or_gone() -> None:
    clock = Clock()
    turned = asyncio.Event()
    release = asyncio.Event()
    gave_up = asyncio.Event()

    async def body() -> None:
        loop.beat()
        turned.set()
        await release.wait()  # stuck: no more turns
        raise RuntimeError("died")

    async def give_up(exc: BaseException) -> None:
        gave_up.set()

    loop = SupervisedLoop("delivery", body, give_up, max_restarts=0, stall_s=60, clock=clock)

    async def alive() -> bool:
        return loop.alive

    app = web.Application()
    app.add_routes(health_routes({"delivery_loop": alive}))
    async with TestClient(TestServer(app)) as client:
        loop.start()
        await asyncio.wait_for(turned.wait(), 5)
        assert (await client.get("/readyz")).status == 200
        clock.now_s = 61.0  # no turn for longer than stall_s
        response = await client.get("/readyz")
        assert response.status == 503
        assert (await response.json())["checks"] == {"delivery_loop": "failing"}
        clock.now_s = 0.0
        release.set()  # it dies: not alive although recently turned
        await asyncio.wait_for(gave_up.wait(), 5)
        assert not loop.alive
        assert (await client.get("/readyz")).status == 503
    await loop.stop()


async def test_the_index_loop_restarts_from_its_committed_offsets() -> None:
    """What the failed loop had fetched but not written is read again, never passed over."""
    from typing import Any

    from aiokafka import TopicPartition

    from pipeline.indexer import Indexer
    from pipeline.settings import Settings

    written, never = TopicPartition("events", 0), TopicPartition("events", 1)

    class Consumer:
        def __init__(self) -> None:
            self.moves: list[tuple[TopicPartition, Any]] = []

        def assignment(self) -> set[TopicPartition]:
            return {written, never}

        async def committed(self, tp: TopicPartition) -> int | None:
            return 42 if tp == written else None

        def seek(self, tp: TopicPartition, offset: int) -> None:
            self.moves.append((tp, offset))

        async def seek_to_beginning(self, tp: TopicPartition) -> None:
            self.moves.append((tp, "beginning"))

    indexer = Indexer(Settings(), None)  # type: ignore[arg-type]
    consumer = indexer._consumer = Consumer()  # type: ignore[assignment]
    await indexer._rewind()
    assert sorted(consumer.moves, key=str) == sorted([(written, 42), (never, "beginning")], key=str)


def test_a_record_the_indexer_cannot_parse_is_skipped_and_counted() -> None:
    """Restarting cannot change a bad record: it must not send the index loop round in
    restarts (nor stop delivery)."""
    from prometheus_client import REGISTRY

    from pipeline.indexer import Batch, _add

    def skipped() -> float:
        value = REGISTRY.get_sample_value("herald_index_records_skipped_total", {"topic": "events"})
        return value or 0.0

    before, batch = skipped(), Batch()
    _add(batch, "events", b"not json", 3)
    _add(batch, "events", b'{"id": "evt_1"}', 4)  # no tenant, type, ...
    assert skipped() == before + 2
    assert batch.events == []
