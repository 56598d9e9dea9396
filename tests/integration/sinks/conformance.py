"""The shared sink conformance suite: every destination type runs it against a real peer.

A type's test module subclasses SinkConformance and provides a `case` fixture (a SinkCase):
how to reach a working peer, a peer that fails in a retryable way, one that fails
permanently, and how to read back what the peer received.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import pytest

from pipeline import ids
from pipeline.settings import Settings
from pipeline.sinks import load_sink
from pipeline.sinks.base import PermanentError, Publisher, RetryableError, Target
from pipeline.sinks.fields import FieldErrors
from tests.support import eventually

T = TypeVar("T")


@dataclass
class SinkCase:
    """What the suite needs to exercise one destination type."""

    sink_type: str
    settings: Settings
    # The config object a user would POST (aliases allowed), for a working peer.
    raw_config: dict[str, Any]
    # Bodies (the event envelope bytes) the peer has received, oldest first.
    received: Callable[[], Awaitable[list[bytes]]]
    # Config objects whose first publish fails retryably / permanently.
    retryable_config: dict[str, Any]
    permanent_config: dict[str, Any]
    # Credential values that must never appear in a config, an error or its cause chain.
    secrets: list[str] = field(default_factory=list)
    # Settings for the retryable case, when the failure lies in them rather than the config
    # (an AWS endpoint override pointing at a closed port); None means `settings`.
    retryable_settings: Settings | None = None
    # The failing cases ("retryable", "permanent") whose config cannot carry credentials
    # (say why at the case); every other failing config must, or its leak check is empty.
    credential_free: tuple[str, ...] = ()


def target_of(case: SinkCase, raw: dict[str, Any]) -> Target:
    """Validate `raw` like the API does and build the Target a worker would open."""
    errors = FieldErrors()
    config, credentials = load_sink(case.sink_type).validate(
        raw, errors, case.sink_type, case.settings
    )
    assert not errors, errors.by_field
    return Target(ids.new_id(ids.DESTINATION), config, credentials)


def envelope() -> tuple[str, dict[str, Any], bytes]:
    event = {
        "id": ids.new_id(ids.EVENT),
        "object": "event",
        "type": "conformance.checked",
        "data": {"n": time.time_ns()},
        "created_at": "2026-01-01T00:00:00.000Z",
    }
    return ids.derived_id(ids.DELIVERY, event["id"], "d"), event, orjson.dumps(event)


async def publish_and_read_back(
    publisher: Publisher, read: Callable[[], Awaitable[list[T]]], what: str
) -> tuple[str, dict[str, Any], bytes, list[T]]:
    """Publish one envelope, wait (up to 10 s) for `read` (a peer's drain) to return
    something, and close the publisher either way: the envelope and what `read` returned."""
    try:
        delivery_id, event, body = envelope()
        await publisher.publish(delivery_id, event, body)
        received: list[T] = await eventually(read, timeout_s=10, what=what)
    finally:
        await publisher.close()
    return delivery_id, event, body, received


def _carries_secret(case: SinkCase, raw: dict[str, Any]) -> bool:
    shown = orjson.dumps(raw).decode()
    return any(secret in shown for secret in case.secrets)


def _chain(exc: BaseException) -> str:
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


class SinkConformance:
    """Subclass with a `case` fixture returning a SinkCase."""

    @pytest.fixture(autouse=True)
    async def _close_sink(self, case: SinkCase) -> AsyncIterator[None]:
        # A sink owns process-wide pools bound to the running loop; each test has its own.
        yield
        await load_sink(case.sink_type).aclose()

    async def test_config_never_holds_credentials(self, case: SinkCase) -> None:
        assert case.secrets, "the case names no credentials: nothing would be checked"
        configs = [case.raw_config, case.retryable_config, case.permanent_config]
        credentialed = [raw for raw in configs if _carries_secret(case, raw)]
        assert credentialed, "no config carries the case's credentials"
        for raw in credentialed:
            shown = orjson.dumps(target_of(case, raw).config).decode()
            for secret in case.secrets:
                assert secret not in shown

    async def test_delivers_exactly_the_payload(self, case: SinkCase) -> None:
        sink = load_sink(case.sink_type)
        publisher = await sink.open(target_of(case, case.raw_config), case.settings)
        try:
            delivery_id, event, body = envelope()
            await publisher.publish(delivery_id, event, body)

            async def arrived() -> bool:
                return body in await case.received()

            await eventually(arrived, timeout_s=15, what=f"{case.sink_type} peer to receive it")
        finally:
            await publisher.close()

    async def test_retryable_failure_is_retryable(self, case: SinkCase) -> None:
        if "retryable" not in case.credential_free:
            assert _carries_secret(case, case.retryable_config), "no credentials to leak"
        settings = case.retryable_settings or case.settings
        await self._expect(case, case.retryable_config, RetryableError, settings)

    async def test_permanent_failure_is_permanent(self, case: SinkCase) -> None:
        if "permanent" not in case.credential_free:
            assert _carries_secret(case, case.permanent_config), "no credentials to leak"
        await self._expect(case, case.permanent_config, PermanentError, case.settings)

    async def test_close_is_idempotent(self, case: SinkCase) -> None:
        """Closing a used publisher twice raises nothing, and leaves the sink usable: a
        publisher opened afterwards for the same destination still delivers."""
        sink = load_sink(case.sink_type)
        target = target_of(case, case.raw_config)
        publisher = await sink.open(target, case.settings)
        await publisher.publish(*envelope())
        await publisher.close()
        await publisher.close()
        again = await sink.open(target, case.settings)
        try:
            delivery_id, event, body = envelope()
            await again.publish(delivery_id, event, body)

            async def arrived() -> bool:
                return body in await case.received()

            await eventually(arrived, timeout_s=15, what="a delivery after the double close")
        finally:
            await again.close()

    async def _expect(
        self, case: SinkCase, raw: dict[str, Any], kind: type[Exception], settings: Settings
    ) -> None:
        publisher = await load_sink(case.sink_type).open(target_of(case, raw), settings)
        try:
            delivery_id, event, body = envelope()
            with pytest.raises(kind) as caught:
                await publisher.publish(delivery_id, event, body)
            chain = _chain(caught.value)
            for secret in case.secrets:
                assert secret not in chain, "a credential leaked into an error"
        finally:
            await publisher.close()
