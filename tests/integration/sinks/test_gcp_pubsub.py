"""GCP Pub/Sub sink conformance against an in-process gRPC Publisher service.

No Pub/Sub server (nor its emulator, a Java download) can run on this machine, so the
peer is a real gRPC server (`grpc.aio`, bound to 127.0.0.1) implementing the real
`google.pubsub.v1.Publisher/Publish` RPC with the library's own request and response
types; the sink drives it through the real client library, pointed at it by
Settings.gcp_pubsub_endpoint (emulator-style: plaintext, no credentials). Topics named
`unavailable`, `missing` and `forbidden` answer UNAVAILABLE, NOT_FOUND and
PERMISSION_DENIED, as Pub/Sub does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.pubsub_v1.types import PublishRequest, PublishResponse, PubsubMessage

from pipeline.settings import Settings
from pipeline.sinks import load_sink
from pipeline.sinks.base import PermanentError
from tests.integration.sinks.conformance import SinkCase, SinkConformance, envelope, target_of
from tests.support import eventually

FAILURES = {
    "unavailable": (grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable."),
    "missing": (grpc.StatusCode.NOT_FOUND, "Resource not found (resource=missing)."),
    "forbidden": (grpc.StatusCode.PERMISSION_DENIED, "User not authorized to perform this."),
}


def service_account() -> dict[str, str]:
    """A service account key of the real shape, with a freshly made RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": "herald-test",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": "herald@herald-test.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


@dataclass
class PublisherService:
    """The Publish RPC: records messages by topic, or fails as FAILURES says."""

    published: dict[str, list[PubsubMessage]] = field(default_factory=dict)

    async def publish(
        self, request: PublishRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> PublishResponse:
        topic = request.topic.rsplit("/", 1)[-1]
        if topic in FAILURES:
            await context.abort(*FAILURES[topic])
        messages = self.published.setdefault(request.topic, [])
        messages.extend(request.messages)
        return PublishResponse(message_ids=[str(len(messages))])


@pytest.fixture
async def pubsub() -> AsyncIterator[tuple[PublisherService, str]]:
    service = PublisherService()
    handler = grpc.method_handlers_generic_handler(
        "google.pubsub.v1.Publisher",
        {
            "Publish": grpc.unary_unary_rpc_method_handler(
                service.publish,
                request_deserializer=PublishRequest.deserialize,
                response_serializer=PublishResponse.serialize,
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield service, f"127.0.0.1:{port}"
    await server.stop(grace=None)


class TestPubSubSink(SinkConformance):
    @pytest.fixture
    def case(self, pubsub: tuple[PublisherService, str]) -> SinkCase:
        service, endpoint = pubsub
        account = service_account()

        async def received() -> list[bytes]:
            return [m.data for m in service.published.get("projects/herald-test/topics/events", [])]

        return SinkCase(
            "gcp_pubsub",
            Settings(
                outbound_allowlist=["127.0.0.1/32"],
                gcp_pubsub_endpoint=endpoint,
                delivery_timeout_s=2,
            ),
            # The aliases, and the key as a JSON string.
            raw_config={
                "project_id": "herald-test",
                "topic_name": "events",
                "credentials_json": orjson.dumps(account).decode(),
            },
            received=received,
            retryable_config={
                "project_id": "herald-test",
                "topic": "unavailable",
                "service_account_json": account,
            },
            permanent_config={
                "project_id": "herald-test",
                "topic": "missing",
                "service_account_json": account,
            },
            secrets=[account["private_key"], account["private_key"].splitlines()[1]],
        )

    async def test_message_carries_attributes(
        self, case: SinkCase, pubsub: tuple[PublisherService, str]
    ) -> None:
        service, _ = pubsub
        publisher = await load_sink("gcp_pubsub").open(
            target_of(case, case.raw_config), case.settings
        )
        try:
            delivery_id, event, body = envelope()
            await publisher.publish(delivery_id, event, body)
        finally:
            await publisher.close()
        messages = await eventually(
            lambda: service.published.get("projects/herald-test/topics/events"), what="message"
        )
        assert messages[0].data == body
        assert dict(messages[0].attributes) == {
            "delivery_id": delivery_id,
            "event_id": event["id"],
            "event_type": event["type"],
            "created_at": event["created_at"],
        }

    @pytest.mark.parametrize(
        ("topic", "settings", "match"),
        [
            ("forbidden", None, "PermissionDenied"),
            ("events", Settings(gcp_pubsub_endpoint="127.0.0.1:1"), "outbound policy"),
        ],
        ids=["permission-denied", "refused-address"],
    )
    async def test_more_permanent_failures(
        self, case: SinkCase, topic: str, settings: Settings | None, match: str
    ) -> None:
        raw = {"project_id": "herald-test", "topic": topic}
        publisher = await load_sink("gcp_pubsub").open(
            target_of(case, raw), settings or case.settings
        )
        try:
            with pytest.raises(PermanentError, match=match):
                await publisher.publish(*envelope())
        finally:
            await publisher.close()
