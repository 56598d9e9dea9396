"""Delivery statistics: the per-minute and per-hour rollup rows the indexer writes with each
batch, and the latency histogram they hold (read back by api/stats.py).

A rollup row sums one (tenant, destination, generation, event type) over one minute and
one hour (migration 016). The indexer passes `Rollup` only what is new to the index (the
events, deliveries and attempts its statements inserted), so a replayed batch adds nothing.
Each (tenant, event type) also has rows of destination ALL_DESTINATIONS that sum its events
and every destination's deliveries and attempts (migration 018): the tenant-wide query reads
those, one row per event type and hour, rather than one per destination as well.

Latencies are counted in LATENCY_SLOTS fixed slots: slot 0 holds [0, 1 ms), slot i holds
[2^((i-1)/3), 2^(i/3)) ms, the last one everything from 2^17 ms (131 s) up. A percentile is
interpolated linearly inside the slot that holds it, so it is off by less than that slot's
width: at most 26 % (2^(1/3) - 1) of the true value, or 1 ms below 1 ms.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from datetime import datetime
from itertools import accumulate
from typing import Any

LATENCY_SLOTS = 53
SLOTS_PER_DOUBLING = 3
MINUTE_S = 60
HOUR_S = 3600
# The destination id of the rows that sum all of a tenant's destinations (and its events).
# Never a destination's id: those start with `evtd_`.
ALL_DESTINATIONS = "*"
# The counters of a rollup row, in the order of migration 016's columns.
COUNTERS = (
    "events",
    "deliveries",
    "succeeded",
    "failed",
    "canceled",
    "attempts_succeeded",
    "attempts_failed",
    "status_2xx",
    "status_3xx",
    "status_4xx",
    "status_5xx",
    "status_none",
)
_INDEX = {name: n for n, name in enumerate(COUNTERS)}
_STATUS_CLASSES = {2: "status_2xx", 3: "status_3xx", 4: "status_4xx", 5: "status_5xx"}
_STATUS_INDEX = {name: _INDEX[name] for name in (*_STATUS_CLASSES.values(), "status_none")}


def latency_slot(latency_ms: float) -> int:
    """The histogram slot that counts an attempt of `latency_ms`."""
    if latency_ms < 1:
        return 0
    return min(LATENCY_SLOTS - 1, math.floor(SLOTS_PER_DOUBLING * math.log2(latency_ms)) + 1)


def slot_bounds_ms(slot: int) -> tuple[float, float]:
    """[low, high) of a slot in ms (the last slot's high is its low: it has no bound)."""
    if slot == 0:
        return 0.0, 1.0
    low = 2 ** ((slot - 1) / SLOTS_PER_DOUBLING)
    high = low if slot == LATENCY_SLOTS - 1 else 2 ** (slot / SLOTS_PER_DOUBLING)
    return low, high


_LOWS_MS = [0.0, *(2 ** ((slot - 1) / SLOTS_PER_DOUBLING) for slot in range(1, LATENCY_SLOTS))]
_WIDTHS_MS = [1.0, *(low * (2 ** (1 / SLOTS_PER_DOUBLING) - 1) for low in _LOWS_MS[1:-1]), 0.0]


def percentiles_ms(histogram: list[int], quantiles: tuple[float, ...]) -> list[float | None]:
    """The `quantiles` (0 to 1) of the latencies a histogram counts, each interpolated inside
    the slot that holds it; None for an empty histogram. The API computes two for every
    bucket of a response: a binary search over the running totals, no loop in Python."""
    running = list(accumulate(histogram))
    if not running or running[-1] == 0:
        return [None] * len(quantiles)
    found: list[float | None] = []
    for quantile in quantiles:
        rank = quantile * running[-1]
        slot = bisect_left(running, rank) if rank > 0 else 0
        count = histogram[slot]
        share = (rank - (running[slot] - count)) / count if count else 0.0
        found.append(round(_LOWS_MS[slot] + _WIDTHS_MS[slot] * share, 3))
    return found


def status_class(response_status: int | None) -> str:
    """The counter of an attempt's response status: its hundreds, or `status_none`."""
    if response_status is None:
        return "status_none"
    return _STATUS_CLASSES.get(response_status // 100, "status_none")


# Counter positions, by what an attempt or a row adds (looked up once, not per attempt).
_EVENT = (_INDEX["events"],)
_DELIVERY = (_INDEX["deliveries"],)
_CANCELED = (_INDEX["canceled"],)
_SUCCEEDED = (_INDEX["attempts_succeeded"], _INDEX["succeeded"])
_RETRIED = (_INDEX["attempts_failed"],)
_DEAD = (_INDEX["attempts_failed"], _INDEX["failed"])

Group = tuple[str, str, str, str]  # tenant, destination, generation, event type


class Rollup:
    """The rollup rows of one indexer batch: `Batch.write` adds what its statements
    inserted, then upserts `rows()` in the same transaction. Counted per minute; the hour
    rows are the sums of the minute rows, made by `rows()`."""

    def __init__(self) -> None:
        self._minutes: dict[tuple[Group, datetime], tuple[list[int], list[int]]] = {}

    def _add(
        self, group: Group, at: datetime, counters: tuple[int, ...], latency_ms: float | None = None
    ) -> None:
        key = (group, at.replace(second=0, microsecond=0))
        sums = self._minutes.get(key)
        if sums is None:
            sums = self._minutes[key] = ([0] * len(COUNTERS), [0] * LATENCY_SLOTS)
        for index in counters:
            sums[0][index] += 1
        if latency_ms is not None:
            sums[1][latency_slot(latency_ms)] += 1

    def event(self, tenant: str, event_type: str, created_at: datetime) -> None:
        """A published event new to the index."""
        self._add((tenant, "", "", event_type), created_at, _EVENT)

    def delivery(
        self,
        tenant: str,
        destination: str,
        generation: str | None,
        event_type: str,
        created_at: datetime,
    ) -> None:
        """A delivery new to the index (routed at `created_at`)."""
        self._add((tenant, destination, generation or "", event_type), created_at, _DELIVERY)

    def attempt(
        self,
        group: Group,
        outcome: str,
        response_status: int | None,
        latency_ms: float | None,
        dead_letter: str | None,
        at: datetime,
    ) -> None:
        """An attempt new to the index, of the delivery of `group` (tenant, destination,
        generation, event type): `canceled` counts the delivery canceled (no attempt made),
        `success` counts it succeeded, a failure that dead-letters counts it failed."""
        if outcome == "canceled":
            self._add(group, at, _CANCELED)
            return
        counters: tuple[int, ...]
        if outcome == "success":
            counters = _SUCCEEDED
        else:
            counters = _RETRIED if dead_letter is None else _DEAD
        self._add(group, at, (*counters, _STATUS_INDEX[status_class(response_status)]), latency_ms)

    def rows(self) -> list[tuple[Any, ...]]:
        """One row per (group, minute) and per (group, hour), and the ALL_DESTINATIONS rows
        of each (tenant, event type), in migration 016's `index_stats` order."""
        minutes = dict(self._minutes)
        for (group, minute), sums in self._minutes.items():
            _add_into(minutes, ((group[0], ALL_DESTINATIONS, "", group[3]), minute), sums)
        hours: dict[tuple[Group, datetime], tuple[list[int], list[int]]] = {}
        for (group, minute), sums in minutes.items():
            _add_into(hours, (group, minute.replace(minute=0)), sums)
        return [
            (tenant, span_s, at, destination, generation, event_type, *counters, histogram)
            for span_s, sums_of in ((MINUTE_S, minutes), (HOUR_S, hours))
            for ((tenant, destination, generation, event_type), at), (counters, histogram) in (
                sums_of.items()
            )
        ]


def _add_into(
    into: dict[tuple[Group, datetime], tuple[list[int], list[int]]],
    key: tuple[Group, datetime],
    sums: tuple[list[int], list[int]],
) -> None:
    """Add counters and a histogram to those of `key` (a copy of them if it has none)."""
    found = into.get(key)
    if found is None:
        into[key] = (list(sums[0]), list(sums[1]))
    else:
        found[0][:] = map(sum, zip(found[0], sums[0], strict=True))
        found[1][:] = map(sum, zip(found[1], sums[1], strict=True))
