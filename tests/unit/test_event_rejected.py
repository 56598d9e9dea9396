"""Failures the event causes, told apart from the destination's (issue 12, C16): sinks check
their target's limits before sending and raise EventRejected; refused credentials are
CredentialsRefused. pipeline/retry.py then never counts the first toward auto-disable and
gives the second a grace on a destination never delivered to."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.sinks.aws_common import error_for_code
from pipeline.sinks.aws_eventbridge import MAX_DETAIL_TYPE_CHARS, EventBridgePublisher
from pipeline.sinks.aws_sqs import SqsPublisher
from pipeline.sinks.base import (
    CredentialsRefused,
    DeliveryResult,
    EventRejected,
    PermanentError,
    Target,
)


class Client:
    """Records the calls that would have gone to AWS; answers like a success."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        self.calls.append((operation, params))
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "e"}], "MessageId": "m"}

    async def close(self) -> None:
        return None


def _event(event_type: str = "task_run.completed", data: Any = None) -> dict[str, Any]:
    return {
        "id": "evt_1",
        "object": "event",
        "type": event_type,
        "data": data or {},
        "created_at": "2026-01-01T00:00:00Z",
    }


def _eventbridge(client: Client) -> EventBridgePublisher:
    target = Target("evtd_1", {"event_bus_name": "bus", "region": "us-east-1"}, {})
    return EventBridgePublisher(client, target, "herald")  # type: ignore[arg-type]


def _sqs(client: Client) -> SqsPublisher:
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/q"
    return SqsPublisher(client, Target("evtd_1", {"queue_url": url}, {}))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "event",
    [
        _event("a." + "b" * (MAX_DETAIL_TYPE_CHARS - 1)),  # 129 characters: Herald takes 200
        _event(data={"blob": "x" * 256 * 1024}),
    ],
    ids=["detail_type_over_128", "entry_over_256_kb"],
)
async def test_eventbridge_refuses_what_put_events_would_before_sending(
    event: dict[str, Any],
) -> None:
    client = Client()
    with pytest.raises(EventRejected) as refused:
        await _eventbridge(client).publish("evdl_1", event, orjson.dumps(event))
    assert client.calls == []
    assert "EventBridge" in str(refused.value)


async def test_eventbridge_sends_an_event_within_its_limits() -> None:
    client, event = Client(), _event("a." + "b" * (MAX_DETAIL_TYPE_CHARS - 2))
    result = await _eventbridge(client).publish("evdl_1", event, orjson.dumps(event))
    assert isinstance(result, DeliveryResult) and len(client.calls) == 1


@pytest.mark.parametrize(
    "event",
    [_event(data={"blob": "x" * 256 * 1024}), _event(data={"text": "ok \ufffe"})],
    ids=["over_256_kb", "character_sqs_refuses"],
)
async def test_sqs_refuses_what_send_message_would_before_sending(event: dict[str, Any]) -> None:
    client = Client()
    with pytest.raises(EventRejected):
        await _sqs(client).publish("evdl_1", event, orjson.dumps(event))
    assert client.calls == []


async def test_sqs_sends_an_event_within_its_limits() -> None:
    client, event = Client(), _event(data={"text": "héllo 😀\t", "blob": "x" * 200_000})
    await _sqs(client).publish("evdl_1", event, orjson.dumps(event))
    assert len(client.calls) == 1


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("InvalidMessageContents", EventRejected),
        ("MalformedDetail", EventRejected),
        ("InvalidClientTokenId", CredentialsRefused),
        ("UnrecognizedClientException", CredentialsRefused),
        ("AccessDenied", CredentialsRefused),
        ("NonExistentQueue", PermanentError),
    ],
)
def test_aws_codes_say_whose_fault_a_refusal_is(code: str, kind: type[Exception]) -> None:
    error = error_for_code("sqs", code, 400)
    assert type(error) is kind
    assert isinstance(error, PermanentError)
    assert error.auth is (kind is CredentialsRefused)
