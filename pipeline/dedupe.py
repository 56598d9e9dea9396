"""Publisher-chosen event ids seen in the last 24 h, per tenant: the router's dedupe.

A publish with an `id` of the publisher's choosing is idempotent for `WINDOW_MS`: the
router routes the first sighting of (tenant, id) and drops a repeat within the window. A
marker is written only once the deliveries of its event are acknowledged by the broker, so
a router killed in between routes the event again after a restart (with the same delivery
ids) instead of dropping it as a "duplicate" of itself. Markers older than the window are
evicted from memory here, and from the changelog (`event-ids`, compact+delete, 24 h
retention) by the broker. An id reused after the window is a new event: its delivery ids
derive from its acceptance time too (pipeline/agents/router.py), so they are new as well.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping

from pipeline.ids import scoped

WINDOW_MS = 24 * 3600 * 1000
EVICT_EVERY_MS = 10 * 60 * 1000

Markers = MutableMapping[bytes, int | None]
WriteChangelog = Callable[[int, bytes, int], object]


def marker_key(tenant: str, event_id: str) -> bytes:
    """The marker of one tenant's event id (another tenant's same id is its own event)."""
    return scoped(tenant, event_id).encode()


class Sightings:
    """First sightings of a batch, written as markers once the batch is safely routed."""

    def __init__(
        self, markers: Markers, write_changelog: WriteChangelog, window_ms: int = WINDOW_MS
    ) -> None:
        self._markers = markers
        self._write_changelog = write_changelog
        self._window_ms = window_ms
        self._pending: dict[bytes, int] = {}  # marker key → partition, this batch's
        self._evicted_at_ms = 0

    def first(self, key: bytes, partition: int, now_ms: int) -> bool:
        """Whether this is the first sighting of `key` in the window (this batch counts);
        if so it is remembered for `commit`."""
        if key in self._pending:
            return False
        previous = self._markers.get(key)
        if previous is not None and now_ms - previous < self._window_ms:
            return False
        self._pending[key] = partition
        return True

    def commit(self, now_ms: int) -> None:
        """The batch's deliveries are acknowledged: write its markers (in memory and to the
        changelog partition of the event's own partition), and evict now and then."""
        for key, partition in self._pending.items():
            self._markers[key] = now_ms
            self._write_changelog(partition, key, now_ms)
        self._pending.clear()
        if now_ms - self._evicted_at_ms >= EVICT_EVERY_MS:
            self.evict(now_ms)

    def forget_batch(self) -> None:
        """The batch was not routed: its sightings do not count."""
        self._pending.clear()

    def evict(self, now_ms: int) -> int:
        """Drop the markers older than the window; how many were dropped."""
        self._evicted_at_ms = now_ms
        expired = [
            key
            for key, seen_ms in list(self._markers.items())
            if seen_ms is None or now_ms - seen_ms >= self._window_ms
        ]
        for key in expired:
            del self._markers[key]
        return len(expired)
