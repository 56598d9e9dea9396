"""now_iso (pipeline/timeutil.py): the format Herald writes, and the current time."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pipeline.timeutil import now_iso

FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_now_iso_is_the_current_utc_time_to_the_millisecond() -> None:
    before = datetime.now(UTC)
    stamps = [now_iso() for _ in range(2000)]  # spans a second's change now and then
    after = datetime.now(UTC)
    for stamp in stamps:
        assert FORMAT.fullmatch(stamp), stamp
        at = datetime.fromisoformat(stamp)
        assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= at <= after
    assert stamps == sorted(stamps)
