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

The fetch loop hands each record to Faust's conductor with a plain await whenever nothing
can make the hand-over wait, instead of Faust's `wait_first(callback(record),
suspend_flow.wait())`, which made four tasks and an `asyncio.wait` per record (a quarter
of the router's CPU, bench/results/profile-router/). See `Consumer._drain_messages`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerT, Message
from mode import ServiceT

# How long a fetch waits when a rebalance leaves it nothing to read (Faust asks again).
IDLE_FETCH_S = 0.1
# Records handed over in a row before a loop turn for the other tasks (as Faust's loop).
YIELD_EVERY = 100


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

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """Faust's fetch loop, run by its Fetcher service until the fetcher or the consumer
        stops: fetch, then hand the records over (`_hand_over`)."""
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set  # type: ignore[attr-defined]
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=1.0)
                await self.sleep(0)  # getmany may return at once: let the others run
                if not self.should_stop:
                    await self._hand_over(records)
                    self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise

    async def _hand_over(self, records: AsyncIterator[tuple[TP, Message]]) -> None:
        """Hand each record of one fetch to the conductor (`self.callback`), which puts its
        event on the queue of every channel reading the partition; called by
        `_drain_messages`.

        As Faust's loop, record by record: a record before the partition's read offset is
        dropped, gaps in acking topics' offsets are recorded, a commit is made every
        `broker_commit_every` acknowledged records, and the read offset advances. The one
        difference: Faust races every hand-over against `suspend_flow` (set when a
        rebalance stops the flow) in `wait_first`, four tasks per record. Here a record
        whose hand-over cannot wait (`_hand_over_is_immediate`) is handed over with a plain
        await, which runs to its end without leaving the loop; only the others (flow
        stopped, a full queue, a full producer buffer) go through `wait_first` as in Faust.
        """
        callback = self.callback
        read_offset = self._read_offset
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        hand_over_is_immediate = self._hand_over_is_immediate
        since_yield = 0
        async for tp, message in records:
            since_yield += 1
            if since_yield > YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            last_offset = read_offset[tp]
            if last_offset is not None and offset < last_offset:
                continue  # read already (Faust drops it too)
            if last_offset and offset - last_offset > 1 and acks_enabled_for(tp.topic):
                await self._add_gap(tp, last_offset + 1, offset)
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            if hand_over_is_immediate(tp):
                await callback(message)
            else:
                await self.wait_first(callback(message), self.suspend_flow.wait())
            read_offset[tp] = offset

    def _hand_over_is_immediate(self, tp: TP) -> bool:
        """Whether the conductor's hand-over of a record of `tp` runs to its end without
        waiting, called by `_hand_over` right before it: the flow is neither stopped nor
        suspended, the conductor is not rebuilding its index, the producer buffer is not
        over its limit (the hand-over would flush it), and no queue the record goes to is
        full. Those are every wait in the conductor's hand-over (faust.transport.conductor,
        and its Cython twin), but for a loop turn's wait for the conductor's lock in the
        moment after a rebuild releases it to a hand-over that was waiting for it."""
        app: Any = self.app
        conductor = app.topics
        buffer = app.producer.buffer
        return (
            not self.suspend_flow.is_set()
            and app.flow_control.is_active()
            and not conductor._tp_to_callback_lock.locked()
            and buffer.size <= buffer.max_messages
            and not any(channel.queue.full() for channel in conductor._tp_index.get(tp, ()))
        )


class Transport(faust_aiokafka.Transport):
    """The `kafka://` transport with the consumer above."""

    Consumer: ClassVar[type[ConsumerT]] = Consumer
