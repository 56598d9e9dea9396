"""Offset bookkeeping for consumers with many records in flight per partition.

Records finish out of order; the committable offset of a partition is the lowest offset
not yet finished, so a crash never skips a record still in flight (at-least-once). A
tracker is bounded: at `max_unfinished` offsets its consumer pauses the partition (one
stuck record must not let the finished ones behind it grow without end).
"""

from __future__ import annotations


class PartitionTracker:
    """Offsets of one partition: which are in flight, which are done."""

    def __init__(self, max_unfinished: int = 0) -> None:
        self._pending: dict[int, bool] = {}  # offset → done; insertion order = offset order
        self._next: int | None = None
        self._max_unfinished = max_unfinished
        self.stalled = False  # its partition is paused until half the bound is finished

    def add(self, offset: int) -> None:
        """A record was fetched and is now in flight."""
        self._pending[offset] = False
        self._next = offset + 1

    def done(self, offset: int) -> bool:
        """A record is finished (delivered, or handed on durably). True if that ends a
        stall: the partition may be resumed."""
        if offset in self._pending:
            self._pending[offset] = True
        while self._pending:
            first = next(iter(self._pending))
            if not self._pending[first]:
                break
            del self._pending[first]
        if self.stalled and len(self._pending) <= self._max_unfinished // 2:
            self.stalled = False
            return True
        return False

    def stall(self) -> bool:
        """True if the tracker just reached its bound (0: unbounded): pause the partition."""
        if self.stalled or not self._max_unfinished:
            return False
        self.stalled = len(self._pending) >= self._max_unfinished
        return self.stalled

    @property
    def in_flight(self) -> int:
        """How many records are fetched but not finished (done ones behind a slow one count)."""
        return len(self._pending)

    def committable(self) -> int | None:
        """The offset to commit: lowest unfinished, or one past the last fetched."""
        if self._pending:
            return next(iter(self._pending))
        return self._next
