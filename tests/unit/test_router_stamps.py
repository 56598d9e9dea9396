"""The router waits for its view to reach each event's stamp, once per stamp in a row."""

from __future__ import annotations

from typing import Any

from pipeline.agents.router import Stamps


class _View:
    def __init__(self) -> None:
        self.waits: list[dict[int, int]] = []

    async def wait_offsets(self, offsets: dict[int, int], timeout_s: float) -> None:
        self.waits.append(offsets)


async def test_a_stamp_is_waited_for_once_while_the_events_share_it() -> None:
    view = _View()
    stamps = Stamps(view, 1.0)  # type: ignore[arg-type]
    first: dict[str, Any] = {"0": 3, "1": 5}
    assert await stamps.reached(first) == {0: 3, 1: 5}
    assert await stamps.reached({"0": 3, "1": 5}) == {0: 3, 1: 5}
    assert view.waits == [{0: 3, 1: 5}]
    assert await stamps.reached({"0": 4, "1": 5}) == {0: 4, 1: 5}
    assert await stamps.reached(None) is None
    assert await stamps.reached({}) is None
    assert view.waits == [{0: 3, 1: 5}, {0: 4, 1: 5}]
