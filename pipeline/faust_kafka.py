"""Faust's aiokafka transport, with stream partitions that have no committed offset rewound
to their beginning whenever Faust seeks to the committed offsets.

Records fetched while a rebalance or table recovery is under way are dropped, not
processed: those of a partition paused in the meantime, or of a fetch that returns in the
next generation or while the flow is stopped. aiokafka has already moved past them, so
Faust seeks every stream partition back to its committed offset before it resumes. But
aiokafka's `seek_to_committed` leaves a partition with no committed offset (or offset 0)
where it is, which after such a drop is the end of the partition. A partition taken over
from a worker killed before its first commit was then skipped whole: its events were
never routed, and never committed either (the fault test "one of two workers killed").

For a partition without a committed offset, "the committed position" is the group's
reset position, the beginning (`consumer_auto_offset_reset="earliest"`), so that is where
it goes. Records are at worst routed again, which is at-least-once as before (a delivery
routed twice keeps its id). Changelog partitions are left alone: table recovery and
standbys position those themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerT


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer; `seek_to_committed` also rewinds never-committed
    stream partitions to their beginning."""

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek every assigned partition to its committed offset, or else its beginning."""
        committed: Mapping[Any, int | None] = await super().seek_to_committed()
        uncommitted = [
            tp for tp, offset in committed.items() if not offset and not self._is_changelog_tp(tp)
        ]
        if uncommitted:
            self.log.info("No committed offset: seeking to the beginning of %s", uncommitted)
            await self._thread.seek_to_beginning(*uncommitted)
        return committed  # type: ignore[return-value]


class Transport(faust_aiokafka.Transport):
    """The `kafka://` transport with the consumer above."""

    Consumer: ClassVar[type[ConsumerT]] = Consumer
