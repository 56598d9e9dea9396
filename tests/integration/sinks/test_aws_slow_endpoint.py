"""A slow AWS endpoint cannot hold up other AWS deliveries (issue 12, C20).

The slow endpoint is a real HTTP server on loopback that accepts requests and never
answers until the test lets it go; the healthy one is the session's moto server. Both are
destinations of one SQS sink (one pool of threads), as two regions are in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pipeline.settings import Settings
from pipeline.sinks.aws_sqs import SqsSink
from pipeline.sinks.base import Publisher, RetryableError, Target
from pipeline.sinks.fields import FieldErrors
from tests.integration.sinks.conformance import envelope
from tests.integration.sinks.conftest import Aws
from tests.support import eventually

THREADS = 8  # sink_max_in_flight: the sink's pool has 8 threads


class StallingEndpoint:
    """Reads each request and answers nothing until released; counts requests held."""

    def __init__(self) -> None:
        self.held = 0
        self.released = asyncio.Event()
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            self.held += 1
            try:
                await self.released.wait()
            finally:
                self.held -= 1
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[StallingEndpoint]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            self.released.set()
            server.close()


async def _open(sink: SqsSink, aws: Aws, queue_url: str, settings: Settings) -> Publisher:
    raw = {"queue_url": queue_url, "region": aws.region, "key": aws.key_id, "secret": aws.secret}
    errors = FieldErrors()
    config, credentials = sink.validate(raw, errors, "aws_sqs", settings)
    assert not errors, errors.by_field
    return await sink.open(Target(f"evtd_{uuid.uuid4().hex[:8]}", config, credentials), settings)


@pytest.fixture
async def sink() -> AsyncIterator[SqsSink]:
    sink = SqsSink()  # a pool of its own, sized by these tests' settings
    yield sink
    await sink.aclose()


async def _publish_all(publishers: list[Publisher], each: int) -> list[Any]:
    calls = [p.publish(*envelope()) for p in publishers for _ in range(each)]
    return await asyncio.gather(*calls, return_exceptions=True)


async def test_a_slow_endpoint_leaves_threads_for_other_destinations(
    aws: Aws, sink: SqsSink
) -> None:
    queue_url, _ = aws.new_queue(f"herald-{uuid.uuid4().hex}")
    healthy = aws.settings.model_copy(update={"sink_max_in_flight": THREADS})
    async with StallingEndpoint().running() as slow:
        stalled = healthy.model_copy(
            update={"aws_endpoint_url": slow.url, "delivery_timeout_s": 60.0}
        )
        slow_ones = [await _open(sink, aws, queue_url, stalled) for _ in range(6)]
        fast = await _open(sink, aws, queue_url, healthy)
        try:
            # 6 destinations in the slow "region", 3 deliveries each: more than the pool.
            stuck = asyncio.ensure_future(_publish_all(slow_ones, each=3))
            await eventually(lambda: slow.held >= THREADS // 2, what="the slow calls")
            # The slow endpoint holds half the threads, never more; the rest serve others.
            async with asyncio.timeout(15):
                for _ in range(3):
                    result = await fast.publish(*envelope())
                    assert result.response_status == 200
            assert slow.held == THREADS // 2
            assert not stuck.done()
        finally:
            slow.released.set()
            await asyncio.gather(stuck, return_exceptions=True)
            for publisher in [*slow_ones, fast]:
                await publisher.close()


async def test_a_call_waiting_for_a_thread_fails_at_its_deadline(aws: Aws, sink: SqsSink) -> None:
    """The deadline covers the wait for a slot and a thread, not only the request."""
    queue_url, _ = aws.new_queue(f"herald-{uuid.uuid4().hex}")
    deadline_s = 2.0
    async with StallingEndpoint().running() as slow:
        settings = Settings(
            aws_endpoint_url=slow.url, delivery_timeout_s=deadline_s, sink_max_in_flight=THREADS
        )
        publisher = await _open(sink, aws, queue_url, settings)
        try:
            started = time.monotonic()

            async def timed() -> float:
                with pytest.raises(RetryableError, match="timed out"):
                    await publisher.publish(*envelope())
                return time.monotonic() - started

            # Twice as many deliveries as threads: most of them wait for one.
            elapsed = await asyncio.gather(*(timed() for _ in range(2 * THREADS)))
        finally:
            slow.released.set()
            await publisher.close()
    # Every one failed at its deadline; none waited for the others' requests to end.
    assert max(elapsed) < deadline_s + 1.5, elapsed
