"""Object ids: a type prefix plus a ULID (`evt_`, `evtd_`, `evdl_`, `evat_`).

ULIDs are made and read here rather than through the `ulid` package, whose pure-Python
base32 showed in the delivery path's profile (two ids per delivery): the same encoding
(Crockford's base32, 48 bits of milliseconds then 80 of randomness, monotonic within a
millisecond), by table lookups. tests/unit/test_ids.py holds it to the package's output.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from typing import Any

EVENT = "evt_"
DESTINATION = "evtd_"
DELIVERY = "evdl_"
ATTEMPT = "evat_"
CHANGE = "chg_"
# A tenant id (the API's and the sources' settings check it): what a key, a header or a
# tenant record may name.
TENANT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every pair of characters, by the 10 bits it encodes: a ULID's 130 bits are 13 pairs.
_PAIRS = tuple(high + low for high in CROCKFORD for low in CROCKFORD)
_PAIR_SHIFTS = tuple(range(120, -1, -10))
# Crockford's digits (either case) as the digits int(…, 32) reads.
_TO_INT_DIGITS = str.maketrans(
    CROCKFORD + CROCKFORD.lower(), "0123456789abcdefghijklmnopqrstuv" * 2
)
_ULID_CHARS = frozenset(CROCKFORD + CROCKFORD.lower())
ULID_CHARS = 26


def ulid_text(value: bytes) -> str:
    """The 26 characters of a 16-byte ULID (130 bits, the first two zero)."""
    number = int.from_bytes(value, "big")
    return "".join([_PAIRS[(number >> shift) & 1023] for shift in _PAIR_SHIFTS])


def ulid_timestamp(text: str) -> bytes:
    """The 6 timestamp bytes of a ULID's text; ValueError if it is no ULID (26 characters
    of Crockford's base32 in either case, the first at most 7)."""
    if len(text) != ULID_CHARS or not _ULID_CHARS.issuperset(text) or text[0] > "7":
        raise ValueError("not a ULID")
    return int(text[:10].translate(_TO_INT_DIGITS), 32).to_bytes(6, "big")


def new_id(prefix: str) -> str:
    """Return a fresh id with the given prefix; ULIDs sort by creation time (and, made by one
    process within one millisecond, by order of making)."""
    return f"{prefix}{_FRESH.next()}"


class _MonotonicUlids:
    """ULIDs as python-ulid's ULID() makes them (randomness counting up within a
    millisecond), at a fraction of its cost: an API batch makes 1,000 per request.

    A ULID is 26 base32 digits: 10 for the millisecond, 16 for 80 bits of randomness.
    Within a millisecond only the randomness counts up, and mostly only its low 40 bits,
    so the digits of the millisecond and of the high 40 bits are kept between calls.
    """

    _PAIRS = _PAIRS
    _MAX_RANDOMNESS = (1 << 80) - 1
    _LOW_MASK = (1 << 40) - 1

    def __init__(self) -> None:
        self._last_ms = 0
        self._randomness = 0
        self._ms_digits = ""
        self._high = -1
        self._high_digits = ""

    def _digits(self, value: int) -> str:
        """The 8 digits of 40 bits."""
        pairs = self._PAIRS
        return (
            pairs[value >> 30 & 1023]
            + pairs[value >> 20 & 1023]
            + pairs[value >> 10 & 1023]
            + pairs[value & 1023]
        )

    def next(self) -> str:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > self._last_ms or self._randomness >= self._MAX_RANDOMNESS:
            self._last_ms = max(now_ms, self._last_ms + (now_ms <= self._last_ms))
            self._randomness = int.from_bytes(os.urandom(10), "big")
            # 48 bits after two zero bits: the top pair, then 40 bits.
            self._ms_digits = self._PAIRS[self._last_ms >> 40] + self._digits(self._last_ms)
        else:
            self._randomness += 1
        high = self._randomness >> 40
        if high != self._high:
            self._high, self._high_digits = high, self._digits(high)
        return self._ms_digits + self._high_digits + self._digits(self._randomness & self._LOW_MASK)


_FRESH = _MonotonicUlids()


def derived_id(prefix: str, parent_id: str, *parts: str) -> str:
    """A stable id for a child of `parent_id` (an id ending in a ULID).

    Same inputs, same id: a delivery routed twice (after a crash) keeps its id, so
    receivers deduplicate on it. The ULID keeps the parent's timestamp, so ids still sort.
    """
    digest = hashlib.sha256("\x1f".join((parent_id, *parts)).encode()).digest()
    try:
        timestamp = ulid_timestamp(parent_id.split("_", 1)[-1])
    except ValueError:  # a publisher-chosen event id need not be a ULID
        timestamp = digest[10:16]
    return prefix + ulid_text(timestamp + digest[:10])


# Destination ids are scoped per tenant: the same `evtd_…` may name one destination in each
# tenant. Kafka keys (destination-changes, destinations, deliveries) and every in-memory
# map join the two with "/", which no id contains (ids are `prefix_` + [A-Za-z0-9_-]), so a
# key splits unambiguously at its last "/" whatever the tenant's name holds.
SCOPE_SEPARATOR = "/"


def scoped(tenant: str, object_id: str) -> str:
    """`tenant/object_id`: an id within its tenant, as keys and maps hold it."""
    return f"{tenant}{SCOPE_SEPARATOR}{object_id}"


def unscoped(key: str) -> tuple[str | None, str]:
    """(tenant, id) of a scoped key; (None, key) for a key written before ids were scoped."""
    tenant, separator, object_id = key.rpartition(SCOPE_SEPARATOR)
    return (tenant, object_id) if separator else (None, key)


def destination_ref(tenant: str, destination_id: str, generation: str | None) -> str:
    """One destination in one life: a destination deleted and created again under the same
    id is another ref, so state kept per ref (circuit, counters, clients) starts fresh."""
    return f"{scoped(tenant, destination_id)}{SCOPE_SEPARATOR}{generation or ''}"


def ref_of_destination(record: Mapping[str, Any]) -> str:
    """The `destination_ref` of a folded destination record."""
    return destination_ref(str(record["tenant"]), str(record["id"]), record.get("generation"))


def ref_of_delivery(delivery: Mapping[str, Any]) -> str:
    """The `destination_ref` a delivery was routed to (the same as its destination's while
    that destination lives)."""
    return destination_ref(
        str(delivery["tenant"]),
        str(delivery["destination_id"]),
        delivery.get("destination_generation"),
    )


def change_key(tenant: str, destination_id: str, record: Mapping[str, Any] | None) -> str:
    """The destination-changes key of a change to the tenant's `destination_id`, whose
    current record is `record` (None for a create): `tenant/id`, or the bare id for a
    record created before ids were scoped (it has no generation), which lives there."""
    if record is not None and not record.get("generation"):
        return destination_id
    return scoped(tenant, destination_id)
