"""publish_each: per event, whether the broker confirmed it (issue 12, B10)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, RequestTimedOutError

from api.publishing import publish_each


class _View:
    async def stamp(self) -> dict[int, int]:
        return {0: 7}


class _Producer:
    """Sends fail as told: 'big' at send time, 'lost' when acknowledged, 'down' stops all."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        name = key.decode()
        if name.startswith("big"):
            raise MessageSizeTooLargeError()
        if name.startswith("down"):
            raise KafkaTimeoutError()
        self.sent.append(name)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if name.startswith("lost"):
            future.set_exception(RequestTimedOutError())
        else:
            future.set_result(None)
        return future


def _events(*names: str) -> list[dict[str, Any]]:
    return [{"id": name, "type": "t.t", "data": {}} for name in names]


async def test_each_event_has_its_own_outcome() -> None:
    producer = _Producer()
    outcomes = await publish_each(_View(), producer, _events("a", "big1", "lost1", "b"))  # type: ignore[arg-type]
    assert [o is None for o in outcomes] == [True, False, False, True]
    assert producer.sent == ["a", "lost1", "b"], "a too-large event fails alone"


async def test_a_broker_error_at_send_fails_the_rest_without_sending_them() -> None:
    producer = _Producer()
    outcomes = await publish_each(_View(), producer, _events("a", "down", "b", "c"))  # type: ignore[arg-type]
    assert [o is None for o in outcomes] == [True, False, False, False]
    assert producer.sent == ["a"]
