"""The router's dedupe of publisher-chosen event ids: per tenant, marked after the batch
is routed, evicted after the window."""

from __future__ import annotations

from pipeline.dedupe import WINDOW_MS, Sightings, marker_key


class _Changelog:
    def __init__(self) -> None:
        self.written: list[tuple[int, bytes, int]] = []

    def __call__(self, partition: int, key: bytes, value: int) -> None:
        self.written.append((partition, key, value))


def test_the_same_id_in_two_tenants_is_two_events() -> None:
    markers: dict[bytes, int | None] = {}
    sightings = Sightings(markers, _Changelog())
    assert sightings.first(marker_key("a", "evt_1"), 0, now_ms=1)
    assert sightings.first(marker_key("b", "evt_1"), 0, now_ms=1)
    assert not sightings.first(marker_key("a", "evt_1"), 0, now_ms=1), "a repeat in a batch"
    sightings.commit(now_ms=1)
    assert not sightings.first(marker_key("b", "evt_1"), 0, now_ms=2)


def test_markers_are_written_only_once_the_batch_is_routed() -> None:
    markers: dict[bytes, int | None] = {}
    changelog = _Changelog()
    sightings = Sightings(markers, changelog)
    key = marker_key("a", "evt_1")
    assert sightings.first(key, 3, now_ms=10)
    assert markers == {} and changelog.written == [], "nothing marked before the sends"
    sightings.forget_batch()  # the sends failed: the worker will route the batch again
    assert sightings.first(key, 3, now_ms=11), "not its own duplicate"
    sightings.commit(now_ms=11)
    assert markers == {key: 11} and changelog.written == [(3, key, 11)]


def test_markers_older_than_the_window_are_evicted_and_the_id_is_new_again() -> None:
    markers: dict[bytes, int | None] = {}
    sightings = Sightings(markers, _Changelog())
    old, recent = marker_key("a", "evt_old"), marker_key("a", "evt_recent")
    for key, at_ms in ((old, 0), (recent, WINDOW_MS // 2)):
        assert sightings.first(key, 0, now_ms=at_ms)
        sightings.commit(now_ms=at_ms)
    assert not sightings.first(old, 0, now_ms=WINDOW_MS - 1)
    assert sightings.evict(now_ms=WINDOW_MS) == 1
    assert set(markers) == {recent}
    assert sightings.first(old, 0, now_ms=WINDOW_MS), "reused after the window: a new event"


def test_commit_evicts_now_and_then_without_being_asked() -> None:
    markers: dict[bytes, int | None] = {marker_key("a", "evt_stale"): 0}
    sightings = Sightings(markers, _Changelog())
    sightings.commit(now_ms=2 * WINDOW_MS)
    assert markers == {}
