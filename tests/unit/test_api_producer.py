"""A 2xx on publish means every in-sync replica has the event: the API's producer is
acks=all and idempotent (README, Guarantees)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

import api.app
import api.publishing
from api.app_keys import SEALER, SETTINGS
from pipeline.crypto import Sealer, generate_key
from pipeline.settings import Settings


class _Started:
    """Stands in for the producer and the view: records how it was made, starts at once."""

    made: list[tuple[type, tuple[Any, ...], dict[str, Any]]] = []  # noqa: RUF012

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _Started.made.append((type(self), args, kwargs))

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class _Producer(_Started):
    pass


class _View(_Started):
    pass


async def test_the_publish_producer_waits_for_every_replica_and_is_idempotent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api.publishing, "AIOKafkaProducer", _Producer)
    monkeypatch.setattr(api.app, "DestinationView", _View)
    _Started.made.clear()
    app = web.Application()
    app[SETTINGS] = Settings()
    app[SEALER] = Sealer(generate_key())
    lifetime = api.app._kafka(app)
    await anext(lifetime)
    with pytest.raises(StopAsyncIteration):
        await anext(lifetime)
    [producer] = [kwargs for kind, _, kwargs in _Started.made if kind is _Producer]
    assert producer["acks"] == "all"
    assert producer["enable_idempotence"] is True
    # The publish request waits for the acknowledgement: no linger on top (issue 13, item 5).
    assert producer["linger_ms"] == 0
