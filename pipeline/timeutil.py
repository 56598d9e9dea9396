"""Timestamps as Herald writes them: UTC, ISO 8601 with a Z."""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    """The current UTC time, millisecond precision, e.g. 2026-11-22T10:00:00.000Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
