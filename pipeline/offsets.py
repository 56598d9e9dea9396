"""Offset bookkeeping for consumers with many records in flight per partition.

Records finish out of order; the committable offset of a partition is the lowest offset
not yet finished, so a crash never skips a record still in flight (at-least-once).
"""

from __future__ import annotations


class PartitionTracker:
    """Offsets of one partition: which are in flight, which are done."""

    def __init__(self) -> None:
        self._pending: dict[int, bool] = {}  # offset → done; insertion order = offset order
        self._next: int | None = None

    def add(self, offset: int) -> None:
        """A record was fetched and is now in flight."""
        self._pending[offset] = False
        self._next = offset + 1

    def done(self, offset: int) -> None:
        """A record is finished (delivered, or handed on durably)."""
        if offset in self._pending:
            self._pending[offset] = True
        while self._pending:
            first = next(iter(self._pending))
            if not self._pending[first]:
                break
            del self._pending[first]

    @property
    def in_flight(self) -> int:
        """How many records are fetched but not finished (done ones behind a slow one count)."""
        return len(self._pending)

    def committable(self) -> int | None:
        """The offset to commit: lowest unfinished, or one past the last fetched."""
        if self._pending:
            return next(iter(self._pending))
        return self._next
