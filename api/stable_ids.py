"""Ids and timestamps a request makes, stable when it runs again under its Idempotency-Key.

A request that published some events, or appended a destination change, and then failed
(or whose process died) must not do it again under new ids when the client retries with the
same key. So under a key, every id a handler makes is derived from the key (its tenant, API
key and name) and the time the key was first claimed, and `now()` is that time: the retry
publishes the same event ids (deduplicated downstream) and appends the same change.
Without a key, ids are fresh ULIDs and `now()` is the current time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from ulid import ULID

from pipeline import ids
from pipeline.timeutil import now_iso

ATTEMPT = "idempotent_attempt"


class IdSource:
    """Fresh ids and the current time: a request without an Idempotency-Key."""

    stable = False

    def id(self, prefix: str, *parts: str) -> str:
        """A new id with `prefix` (`parts` name it within the request; unused here)."""
        return ids.new_id(prefix)

    def now(self) -> str:
        """The current time, as Herald writes timestamps."""
        return now_iso()


@dataclass
class Attempt(IdSource):
    """One run of a request under an Idempotency-Key (the first, or a retry)."""

    first_seen: datetime  # when the key was first claimed; kept by every retry
    seed: bytes  # names the key: tenant, API key and the key itself
    # The response body an earlier run stored as unfinished (see `resume_later`), or None.
    previous: Any = None
    # Set by a handler whose response is not final: stored, but a retry with the same key
    # runs the request again (with this response as `previous`) instead of replaying it.
    resumable: bool = field(default=False)

    stable = True

    def id(self, prefix: str, *parts: str) -> str:
        """The same id on every run: the first-seen time, then a hash of the key and parts."""
        digest = hashlib.sha256(self.seed + "\x1f".join((prefix, *parts)).encode()).digest()
        millis = int(self.first_seen.timestamp() * 1000)
        return f"{prefix}{ULID.from_bytes(millis.to_bytes(6, 'big') + digest[:10])}"

    def now(self) -> str:
        """When the key was first claimed (so a retried publish keeps its `created_at`)."""
        stamp = self.first_seen.astimezone(UTC).isoformat(timespec="milliseconds")
        return stamp.replace("+00:00", "Z")

    def resume_later(self) -> None:
        """Keep this run's response, but let a retry with the same key continue it."""
        self.resumable = True


def id_source(request: web.Request) -> IdSource:
    """The request's Attempt if it carries an Idempotency-Key, else fresh ids."""
    attempt: IdSource | None = request.get(ATTEMPT)
    return attempt if attempt is not None else IdSource()


def seed_of(tenant: str, api_key_sha256: str, key: str) -> bytes:
    """What names one Idempotency-Key: its tenant, the API key that used it, and the key."""
    return hashlib.sha256("\x1f".join((tenant, api_key_sha256, key)).encode()).digest()
