"""new_id: ULIDs python-ulid reads back, of the current time, in the order they were made."""

from __future__ import annotations

import time

import pytest
from ulid import ULID

from pipeline import ids


def test_fresh_ids_are_ulids_of_now_that_sort_in_the_order_made() -> None:
    before_s = time.time()
    made = [ids.new_id(ids.EVENT) for _ in range(5000)]
    after_s = time.time()
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    for text in made[:: len(made) // 50]:
        assert text.startswith(ids.EVENT)
        parsed = ULID.from_str(text.removeprefix(ids.EVENT))
        assert str(parsed) == text.removeprefix(ids.EVENT)
        assert before_s - 0.001 <= parsed.timestamp <= after_s + 0.001


def test_ids_made_within_one_millisecond_count_up() -> None:
    fresh = ids._MonotonicUlids()
    first, second = fresh.next(), fresh.next()
    same_ms = ULID.from_str(first).timestamp == ULID.from_str(second).timestamp
    if same_ms:
        assert int(ULID.from_str(second)) == int(ULID.from_str(first)) + 1
    assert second > first


def test_counting_up_across_the_kept_digits_writes_the_exact_ulid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now_ms = 1_796_000_000_123
    start = (0xABCDE << 40) | ((1 << 40) - 2)  # the low 40 bits carry into the high ones
    monkeypatch.setattr(ids.time, "time_ns", lambda: now_ms * 1_000_000)
    monkeypatch.setattr(ids.os, "urandom", lambda size: start.to_bytes(size, "big"))
    fresh = ids._MonotonicUlids()
    for step in range(4):
        assert fresh.next() == str(ULID.from_int(now_ms << 80 | (start + step)))
