"""Ordered delivery per key: one line per (destination, ordering key) in the runner.

A destination with `ordering: "per_key"` gets the deliveries of one `ordering_key` in
publish order. The router emits them in that order into the destination's one `deliveries`
partition; here, the runner (pipeline/dispatch.py) lets one of them at a time go on to the
policy, the lanes and the sink: the line's head. The others wait in the line, fetched but
unfinished, so their offsets hold the partition's commit point and a crash reads them again
in order. A failed head is not sent to a retry tier (which would let the next one pass it):
it stays the head and is tried again in place when its retry is due. The next one goes on
only once the head has succeeded, been dead-lettered or canceled.

Other keys, and other destinations, are never held by a line: the lanes see one delivery
per key at a time, beside every unordered one.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from pipeline.delivery_record import ORDERING_KEY
from pipeline.lanes import Job

PER_KEY = "per_key"


def line_of(job: Job, *, unknown: bool = False) -> tuple[str, str] | None:
    """The job's line: (destination ref, ordering key) if its delivery has a key and its
    destination (as the worker's view has it now) orders per key, or is `unknown` to the
    view yet (it may: the line is joined in arrival order all the same); else None."""
    key = job.delivery.get(ORDERING_KEY)
    if key is None or not (unknown or job.destination.get("ordering") == PER_KEY):
        return None
    return job.ref, str(key)


class KeyLines:
    """Every line of one worker's runner. A line exists while it has a head."""

    def __init__(self) -> None:
        self._lines: dict[tuple[str, str], deque[Job]] = {}
        self._line_of: dict[Job, tuple[str, str]] = {}  # every job in a line → its line
        self.held = 0  # jobs waiting behind a head

    def join(self, job: Job, line: tuple[str, str]) -> bool:
        """Put the job at the end of its line; True if it is the head (it goes on now)."""
        self._line_of[job] = line
        jobs = self._lines.get(line)
        if jobs is None:
            self._lines[line] = deque((job,))
            return True
        jobs.append(job)
        self.held += 1
        return False

    def ordered(self, job: Job) -> bool:
        """Whether the job is a line's head (its failures are retried in place)."""
        return job in self._line_of

    def done(self, job: Job) -> Job | None:
        """The job is over (delivered, dead-lettered, canceled, or skipped as malformed):
        the next one of its line, now its head, if any."""
        line = self._line_of.pop(job, None)
        if line is None:
            return None
        jobs = self._lines[line]
        jobs.popleft()  # a line's jobs are over in order: this one was its head
        if not jobs:
            del self._lines[line]
            return None
        self.held -= 1
        return jobs[0]

    def drop(self, partitions: set[Any]) -> list[Job]:
        """Forget the jobs fetched from `partitions` (revoked: their new owner reads them
        again); the jobs that became heads of what is left, to go on now."""
        heads: list[Job] = []
        for line, jobs in list(self._lines.items()):
            kept = deque(job for job in jobs if job.partition not in partitions)
            for job in jobs:
                if job.partition in partitions:
                    del self._line_of[job]
            if not kept:
                del self._lines[line]
                self.held -= len(jobs) - 1
                continue
            self.held -= len(jobs) - len(kept)
            if kept[0] is not jobs[0]:
                heads.append(kept[0])
            self._lines[line] = kept
        return heads
