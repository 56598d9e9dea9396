"""The publisher cache: one open client per destination version, stale ones closed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipeline.crypto import Sealer, generate_key
from pipeline.publishers import PublisherCache
from pipeline.settings import Settings
from pipeline.sinks import aclose_all

SEALER = Sealer(generate_key())


def _destination(
    n: int, updated_at: str = "2026-01-01T00:00:00Z", tenant: str = "t1", generation: str = "g1"
) -> dict[str, Any]:
    destination_id = f"evtd_{n}"
    return {
        "id": destination_id,
        "tenant": tenant,
        "generation": generation,
        "change_id": generation,
        "type": "webhook",
        "status": "active",
        "updated_at": updated_at,
        "config": {"url": f"https://example.com/{n}"},
        "sealed": SEALER.seal({"secret": "whsec_" + "A" * 32}, destination_id),
    }


async def test_prune_closes_deleted_disabled_and_changed_destinations_only() -> None:
    cache = PublisherCache(Settings(), SEALER)
    try:
        kept, deleted, disabled, changed = (_destination(n) for n in range(4))
        opened = {d["id"]: await cache.get(d) for d in (kept, deleted, disabled, changed)}
        view = {
            ("t1", kept["id"]): kept,
            ("t1", disabled["id"]): {**disabled, "status": "inactive"},
            ("t1", changed["id"]): _destination(3, updated_at="2026-01-02T00:00:00Z"),
        }

        def current(tenant: str, destination_id: str) -> dict[str, Any] | None:
            return view.get((tenant, destination_id))

        assert await cache.prune(current) == 3
        assert len(cache) == 1
        assert await cache.get(kept) is opened[kept["id"]], "an unchanged client is reused"
        assert await cache.prune(current) == 0
    finally:
        await cache.aclose()
        await aclose_all()


async def test_the_least_recently_used_client_goes_first_beyond_capacity() -> None:
    cache = PublisherCache(Settings(), SEALER, capacity=2)
    try:
        first, second, third = (_destination(n) for n in range(3))
        one = await cache.get(first)
        await cache.get(second)
        assert await cache.get(first) is one  # first is now the most recent
        await cache.get(third)  # evicts second
        assert len(cache) == 2
        assert await cache.get(first) is one
    finally:
        await cache.aclose()
        await aclose_all()


async def test_the_cache_size_setting_bounds_the_open_clients() -> None:
    cache = PublisherCache(Settings(sink_client_cache_size=2), SEALER)
    try:
        for n in range(3):
            await cache.get(_destination(n))
        assert len(cache) == 2
    finally:
        await cache.aclose()
        await aclose_all()


class _SlowToOpen:
    """A sink whose open yields to the loop (a connect), counting opens and closes."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0

    async def open(self, target: Any, settings: Settings) -> Any:
        self.opened += 1
        await asyncio.sleep(0)  # another delivery runs here, as during a real connect
        sink = self

        class _Publisher:
            async def close(self) -> None:
                sink.closed += 1

        return _Publisher()


async def test_concurrent_deliveries_to_one_destination_open_one_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sink = _SlowToOpen()
    monkeypatch.setattr("pipeline.publishers.load_sink", lambda _type: sink)
    cache = PublisherCache(Settings(), SEALER)
    destination = _destination(1)
    publishers = await asyncio.gather(*(cache.get(destination) for _ in range(5)))
    assert sink.opened == 1, "every delivery opened a client of its own"
    assert all(p is publishers[0] for p in publishers)
    await cache.aclose()
    assert sink.closed == 1, "a client was opened and never closed"


async def test_ids_are_per_tenant_and_a_recreated_destination_gets_a_new_client() -> None:
    cache = PublisherCache(Settings(), SEALER)
    try:
        mine, theirs = _destination(1, tenant="t1"), _destination(1, tenant="t2")
        first = await cache.get(mine)
        assert await cache.get(theirs) is not first, "one tenant's evtd_1 is not another's"
        assert len(cache) == 2
        assert await cache.get(mine) is first
        again = _destination(1, tenant="t1", generation="g2")  # deleted and created again
        assert await cache.get(again) is not first
    finally:
        await cache.aclose()
        await aclose_all()
