"""new_id: ULIDs python-ulid reads back, of the current time, in the order they were made."""

from __future__ import annotations

import time

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
