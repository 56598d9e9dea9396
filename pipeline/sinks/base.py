"""The Sink interface every destination type implements, and what a publish returns.

Exceptions (what a publisher may raise; every SDK error is mapped onto these):

    DeliveryError
    ├── RetryableError   the attempt failed but a later one may succeed (retry_after_s hint)
    └── PermanentError   retrying cannot help (bad credentials, 410 Gone, refused address)
        ├── CredentialsRefused   the target refused the destination's credentials
        │                        (`auth` is True; a brand-new key gets a short grace)
        └── EventRejected        this event cannot go to this destination (too large, a
                                 type or characters the target refuses): the event's
                                 fault, never counted toward auto-disable

pipeline/retry.py decides what each of these leads to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.settings import Settings
from pipeline.sinks.fields import FieldErrors


class DeliveryError(Exception):
    """A failed attempt. Messages never contain credentials."""

    def __init__(
        self, message: str, *, response_status: int | None = None, response_body: str | None = None
    ) -> None:
        super().__init__(message)
        self.response_status = response_status
        self.response_body = response_body


class RetryableError(DeliveryError):
    """Try again later; `retry_after_s` is the destination's own hint, if it gave one."""

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        response_status: int | None = None,
        response_body: str | None = None,
    ) -> None:
        super().__init__(message, response_status=response_status, response_body=response_body)
        self.retry_after_s = retry_after_s

    @property
    def timed_out(self) -> bool:
        """The peer did not answer in time (every sink says "timed out" for that)."""
        return isinstance(self.__cause__, TimeoutError) or "timed out" in str(self)


class PermanentError(DeliveryError):
    """Do not retry this delivery. `auth`: the destination refused its credentials (a
    brand-new key may not be valid yet: pipeline/retry.py gives it a short grace)."""

    def __init__(
        self,
        message: str,
        *,
        auth: bool = False,
        response_status: int | None = None,
        response_body: str | None = None,
    ) -> None:
        super().__init__(message, response_status=response_status, response_body=response_body)
        self.auth = auth


class CredentialsRefused(PermanentError):
    """The target refused the destination's credentials (or their permissions)."""

    def __init__(
        self, message: str, *, response_status: int | None = None, response_body: str | None = None
    ) -> None:
        super().__init__(
            message, auth=True, response_status=response_status, response_body=response_body
        )


class EventRejected(PermanentError):
    """This event cannot be delivered to this destination (over a size limit, a type or
    characters the target refuses); the destination itself is fine. Raised before sending
    where the sink knows the target's limits."""


@dataclass(frozen=True)
class DeliveryResult:
    """A successful attempt, as recorded in the attempt log."""

    response_status: int | None = None
    response_body: str | None = None


@dataclass(frozen=True)
class Target:
    """What a publisher needs of a destination: its public config and opened credentials."""

    destination_id: str
    config: dict[str, Any]
    credentials: dict[str, Any]


class Publisher(Protocol):
    """Sends deliveries to one destination. Created by Sink.open, reused until closed."""

    async def publish(self, delivery_id: str, event: dict[str, Any], body: bytes) -> DeliveryResult:
        """Deliver one event; raise a DeliveryError. `body` is its serialized envelope, the
        bytes to send as they are; `event` holds the envelope's `id`, `type` and
        `created_at` (its `data` only in `body`)."""

    async def close(self) -> None:
        """Release what the publisher holds. Called once the destination changes or goes;
        calling it twice is harmless."""


Config = dict[str, Any]
Credentials = dict[str, Any]


class Sink(Protocol):
    """One destination type (the provider): validates its config, opens publishers.

    Called by the API on create and PATCH (validate: shape only, no network), by the
    delivery runner when a destination is first needed (open), and by the worker on
    shutdown (aclose).
    """

    type: str

    def validate(
        self, raw: Any, errors: FieldErrors, path: str, settings: Settings
    ) -> tuple[Config, Credentials]:
        """Check the config object at `path` (aliases resolved), adding every problem to
        `errors`. Returns the public config (shown by the API) and the credentials (sealed
        at rest, never shown)."""

    async def open(self, target: Target, settings: Settings) -> Publisher:
        """A publisher for `target`. Must not do network I/O that can hang."""

    async def aclose(self) -> None:
        """Release process-wide resources (connection pools)."""
