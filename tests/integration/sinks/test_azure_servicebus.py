"""Azure Service Bus sink conformance, tested at the SDK boundary.

No Service Bus server (nor an emulator) can run on this machine, so the test replaces the
sink's `client_factory` with a fake implementing the SDK methods the sink uses
(`get_queue_sender`, `send_messages`, `close`). The fake receives the real
`ServiceBusMessage` objects and fails with the real `azure.servicebus.exceptions` types,
whose messages quote the connection string's key, as the worst SDK message could: the
suite checks that none of it reaches Herald's errors. The sink's own code runs unchanged:
validation, the outbound policy check on the namespace host, mapping errors.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus import exceptions as bus_errors

from pipeline.settings import Settings
from pipeline.sinks import azure_servicebus, load_sink
from pipeline.sinks.base import PermanentError, RetryableError
from tests.integration.sinks.conformance import SinkCase, SinkConformance, envelope, target_of
from tests.support import eventually

KEY = "c2VjcmV0LXNoYXJlZC1hY2Nlc3Mta2V5LWZvci10ZXN0cw=="
WRONG_KEY = "d3Jvbmcta2V5LXRoYXQtdGhlLW5hbWVzcGFjZS1yZWZ1c2Vz"


def connection_string(key: str = KEY, host: str = "127.0.0.1") -> str:
    return (
        f"Endpoint=sb://{host}/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={key}"
    )


@dataclass
class Namespace:
    """A fake Service Bus namespace: queues by name, and what each failing name raises."""

    queues: dict[str, list[ServiceBusMessage]] = field(default_factory=dict)
    open_clients: int = 0

    def failure(self, connection: str, queue: str) -> Exception | None:
        if WRONG_KEY in connection:
            return bus_errors.ServiceBusAuthenticationError(
                message=f"Unauthorized: {connection} was refused"
            )
        if queue == "busy":
            return bus_errors.ServiceBusServerBusyError(message=f"Server busy ({connection})")
        if queue == "missing":
            return bus_errors.MessagingEntityNotFoundError(message=f"No entity {queue}")
        return None


@dataclass
class FakeSender:
    namespace: Namespace
    connection: str
    queue: str

    async def send_messages(self, message: ServiceBusMessage) -> None:
        error = self.namespace.failure(self.connection, self.queue)
        if error is not None:
            raise error
        self.namespace.queues.setdefault(self.queue, []).append(message)

    async def close(self) -> None:
        pass


@dataclass
class FakeClient:
    namespace: Namespace
    connection: str

    def get_queue_sender(self, queue_name: str) -> FakeSender:
        return FakeSender(self.namespace, self.connection, queue_name)

    async def close(self) -> None:
        self.namespace.open_clients -= 1


@pytest.fixture
def namespace(monkeypatch: pytest.MonkeyPatch) -> Iterator[Namespace]:
    namespace = Namespace()

    def factory(connection: str, endpoint: str, ssl_context: ssl.SSLContext) -> FakeClient:
        # The SDK is told to dial the address checked (127.0.0.1), verifying the namespace.
        assert endpoint == f"sb://127.0.0.1:{azure_servicebus.AMQPS_PORT}"
        assert getattr(ssl_context, "server_name", None) == "127.0.0.1"
        namespace.open_clients += 1
        return FakeClient(namespace, connection)

    monkeypatch.setattr(azure_servicebus, "client_factory", factory)
    yield namespace
    assert namespace.open_clients == 0, "a client was left open"


class TestServiceBusSink(SinkConformance):
    @pytest.fixture
    def case(self, namespace: Namespace) -> SinkCase:
        async def received() -> list[bytes]:
            return [b"".join(m.body) for m in namespace.queues.get("events", [])]

        return SinkCase(
            "azure_servicebus",
            Settings(outbound_allowlist=["127.0.0.1/32"], delivery_timeout_s=2),
            raw_config={"queue_name": "events", "connection_string": connection_string()},
            received=received,
            retryable_config={"name": "busy", "connection_string": connection_string()},
            permanent_config={"name": "events", "connection_string": connection_string(WRONG_KEY)},
            secrets=[KEY, WRONG_KEY],
        )

    async def test_message_carries_metadata(self, case: SinkCase, namespace: Namespace) -> None:
        publisher = await load_sink("azure_servicebus").open(
            target_of(case, case.raw_config), case.settings
        )
        try:
            delivery_id, event, body = envelope()
            await publisher.publish(delivery_id, event, body)
            await publisher.publish(*envelope())
        finally:
            await publisher.close()
        messages = await eventually(lambda: namespace.queues.get("events"), what="the message")
        assert len(messages) == 2
        message = messages[0]
        assert message.message_id == delivery_id
        assert message.content_type == "application/json"
        assert message.subject == event["type"]
        assert message.application_properties == {
            "event_id": event["id"],
            "event_type": event["type"],
            "created_at": event["created_at"],
        }
        assert b"".join(message.body) == body

    @pytest.mark.parametrize(
        ("name", "settings", "kind", "match"),
        [
            ("missing", None, PermanentError, "MessagingEntityNotFoundError"),
            ("events", Settings(), PermanentError, "outbound policy"),
            ("busy", None, RetryableError, "ServiceBusServerBusyError"),
        ],
        ids=["entity-not-found", "refused-address", "server-busy"],
    )
    async def test_more_failures(
        self,
        case: SinkCase,
        name: str,
        settings: Settings | None,
        kind: type[Exception],
        match: str,
    ) -> None:
        raw = {"name": name, "connection_string": connection_string()}
        publisher = await load_sink("azure_servicebus").open(
            target_of(case, raw), settings or case.settings
        )
        try:
            with pytest.raises(kind, match=match) as caught:
                await publisher.publish(*envelope())
            assert caught.value.__cause__ is None and caught.value.__context__ is None
        finally:
            await publisher.close()
