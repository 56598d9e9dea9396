"""Faust's aiokafka transport, with two fixes to how stream records are handled around a
rebalance: no stream record is fetched while a rebalance or table recovery is under way,
and stream partitions that have no committed offset are rewound to their beginning
whenever Faust seeks to the committed offsets.

Records fetched while a rebalance or table recovery is under way are dropped, not
processed: those of a partition paused in the meantime, or of a fetch that returns in the
next generation or while the flow is stopped. aiokafka has already moved past them, so
Faust seeks every stream partition back to its committed offset before it resumes. But
aiokafka's `seek_to_committed` leaves a partition with no committed offset (or offset 0)
where it is, which after such a drop is the end of the partition. A partition taken over
from a worker killed before its first commit was then skipped whole: its events were
never routed, and never committed either (the fault test "one of two workers killed").

Records taken in that window can also be lost outright: Faust resumes the stream partitions
and seeks them before its last `flow_control.resume()`, which empties every agent's
queue; records drained into the router's queue meanwhile were thrown away after the
seek had already reset the read offsets, so the next record looked like a gap in the
partition and Faust counted the records in between as processed (47 events never routed
in one run, commits stuck below the hole in another partition). So while the app is
rebalancing only changelog partitions (table recovery, standbys) are fetched, and the
fetch gets a copy of the partitions to read: Faust updates its own set in place when an
assignment arrives, and a fetch already waiting in the consumer thread would otherwise
return records of partitions assigned a moment ago, which Faust then drops.

For a partition without a committed offset, "the committed position" is the group's
reset position, the beginning (`consumer_auto_offset_reset="earliest"`), so that is where
it goes. Records are at worst routed again, which is at-least-once as before (a delivery
routed twice keeps its id). Changelog partitions are left alone: table recovery and
standbys position those themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerT

# How long a fetch waits when a rebalance leaves it nothing to read (Faust asks again).
IDLE_FETCH_S = 0.1


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer: reads no stream partition while rebalancing, and
    `seek_to_committed` also rewinds never-committed stream partitions."""

    async def _getmany(
        self,
        active_partitions: set[TP] | None,
        timeout: float,  # noqa: ASYNC109 - Faust's signature
    ) -> Any:
        if active_partitions is not None:
            partitions = set(active_partitions)  # never the set Faust updates in place
            if self.app.rebalancing:
                partitions = {tp for tp in partitions if self._is_changelog_tp(tp)}
                if not partitions:  # an empty set would make aiokafka return everything
                    await asyncio.sleep(min(timeout, IDLE_FETCH_S))
                    return {}
            active_partitions = partitions
        return await super()._getmany(active_partitions, timeout)

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
