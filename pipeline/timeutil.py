"""Timestamps as Herald writes them: UTC, ISO 8601 with a Z."""

from __future__ import annotations

import time


class _Clock:
    """Formats the current time, the date and time of day once per second (several
    timestamps are written per delivery: formatting each in full showed in its profile)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now_iso(self) -> str:
        now_ns = time.time_ns()
        second, rest_ns = divmod(now_ns, 1_000_000_000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{rest_ns // 1_000_000:03d}Z"


_clock = _Clock()


def now_iso() -> str:
    """The current UTC time, millisecond precision, e.g. 2026-11-22T10:00:00.000Z."""
    return _clock.now_iso()
