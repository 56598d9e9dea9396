"""Object ids: a type prefix plus a ULID (`evt_`, `evtd_`, `evdl_`, `evat_`)."""

from __future__ import annotations

import hashlib

from ulid import ULID

EVENT = "evt_"
DESTINATION = "evtd_"
DELIVERY = "evdl_"
ATTEMPT = "evat_"
CHANGE = "chg_"


def new_id(prefix: str) -> str:
    """Return a fresh id with the given prefix; ULIDs sort by creation time."""
    return f"{prefix}{ULID()}"


def derived_id(prefix: str, parent_id: str, *parts: str) -> str:
    """A stable id for a child of `parent_id` (an id ending in a ULID).

    Same inputs, same id: a delivery routed twice (after a crash) keeps its id, so
    receivers deduplicate on it. The ULID keeps the parent's timestamp, so ids still sort.
    """
    digest = hashlib.sha256("\x1f".join((parent_id, *parts)).encode()).digest()
    try:
        timestamp = ULID.from_str(parent_id.split("_", 1)[-1]).bytes[:6]
    except ValueError:  # a publisher-chosen event id need not be a ULID
        timestamp = digest[10:16]
    return f"{prefix}{ULID.from_bytes(timestamp + digest[:10])}"
