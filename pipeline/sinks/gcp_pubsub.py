"""GCP Pub/Sub sink: each delivery is one message on the customer's topic.

The message data is the envelope; attributes carry the delivery id, event id, event type
and creation time. The client is the library's async GAPIC publisher (one gRPC channel per
destination, opened on the first publish), with the library's own retries off: Herald's
retry tiers decide. Credentials are the destination's service account, never Herald's
own: a destination without one is refused, unless `Settings.gcp_pubsub_endpoint` points at
an emulator-style endpoint (plaintext gRPC, no credentials), whose host must pass the
outbound address policy.

Failures, most specific first (see `_map_errors`):

    PERMISSION_DENIED, UNAUTHENTICATED, a refused token refresh
                                                          → CredentialsRefused
    AddressRefused, NOT_FOUND (topic or project missing), INVALID_ARGUMENT,
    FAILED_PRECONDITION                                   → PermanentError
    UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, ABORTED, any other
    API error, a token-endpoint transport error, DNS, timeout
                                                          → RetryableError

NOT_FOUND is permanent: Pub/Sub does not create topics on publish, so the destination
names a topic that does not exist; a refused key or a missing role is likewise a
configuration the same attempt cannot get past.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import Iterator
from typing import Any

import grpc
import orjson
from google.api_core import exceptions as api_errors
from google.auth import exceptions as auth_errors
from google.auth.credentials import AnonymousCredentials
from google.oauth2 import service_account
from google.pubsub_v1.services.publisher import PublisherAsyncClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
from google.pubsub_v1.types import PubsubMessage

from pipeline.outbound import AddressRefused
from pipeline.settings import Settings
from pipeline.sinks.base import (
    Config,
    Credentials,
    CredentialsRefused,
    DeliveryError,
    DeliveryResult,
    PermanentError,
    Publisher,
    RetryableError,
    Target,
)
from pipeline.sinks.fields import FieldErrors, config_object, pick, string, unknown_fields
from pipeline.sinks.http_common import checked_addresses

PROJECT_ID = re.compile(r"^([a-z][a-z0-9.-]{0,62}:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
TOPIC_ID = re.compile(r"^(?!goog)[A-Za-z][A-Za-z0-9._~%+-]{2,254}$")
SCOPES = ("https://www.googleapis.com/auth/pubsub",)
GOOGLE_OAUTH2_ENDPOINT = "https://oauth2.googleapis.com/token"
MAX_SERVICE_ACCOUNT_CHARS = 16_384


class PubSubPublisher:
    """Publishes to one topic through one async GAPIC client, created on first publish."""

    def __init__(self, target: Target, settings: Settings) -> None:
        self._topic = f"projects/{target.config['project_id']}/topics/{target.config['topic']}"
        self._service_account: dict[str, Any] | None = target.credentials.get(
            "service_account_json"
        )
        self._settings = settings
        self._lock = asyncio.Lock()
        self._client: PublisherAsyncClient | None = None

    async def publish(self, delivery_id: str, event: dict[str, Any], body: bytes) -> DeliveryResult:
        message = PubsubMessage(
            data=body,
            attributes={
                "delivery_id": delivery_id,
                "event_id": str(event.get("id", "")),
                "event_type": str(event.get("type", "")),
                "created_at": str(event.get("created_at", "")),
            },
        )
        timeout_s = self._settings.delivery_timeout_s
        with _map_errors():
            async with asyncio.timeout(timeout_s + 1):  # a backstop to the RPC's deadline
                client = await self._ready_client()
                await client.publish(
                    topic=self._topic, messages=[message], retry=None, timeout=timeout_s
                )
        return DeliveryResult()

    async def _ready_client(self) -> PublisherAsyncClient:
        async with self._lock:
            if self._client is None:
                self._client = await self._new_client()
            return self._client

    async def _new_client(self) -> PublisherAsyncClient:
        endpoint = self._settings.gcp_pubsub_endpoint
        if endpoint:
            host, _, port = endpoint.rpartition(":")
            if not host or not port.isdigit():
                raise PermanentError("Settings.gcp_pubsub_endpoint must be host:port")
            await checked_addresses(host.strip("[]"), int(port), self._settings)
            transport = PublisherGrpcAsyncIOTransport(
                host=endpoint,
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                channel=grpc.aio.insecure_channel(endpoint),
            )
            return PublisherAsyncClient(transport=transport)
        if not self._service_account:
            raise PermanentError("gcp_pubsub destination has no service account credentials")
        return PublisherAsyncClient(credentials=_credentials(self._service_account))

    async def close(self) -> None:
        """Close the gRPC channel; harmless to call again."""
        client, self._client = self._client, None
        if client is not None:
            await client.transport.close()  # type: ignore[no-untyped-call]


def _credentials(info: dict[str, Any]) -> service_account.Credentials:
    """Service account credentials; the token endpoint is always Google's own."""
    error: PermanentError | None = None
    try:
        return service_account.Credentials.from_service_account_info(  # type: ignore[no-any-return,no-untyped-call]
            {**info, "token_uri": GOOGLE_OAUTH2_ENDPOINT}, scopes=SCOPES
        )
    except (ValueError, TypeError) as exc:
        # Raised below, outside this block: the parser's message could quote the key.
        error = PermanentError(f"the service account cannot be used: {type(exc).__name__}")
    raise error


# (exception types, error class, message), most specific first. `{name}` is the class name.
_FAILURES: tuple[tuple[tuple[type[BaseException], ...], type[DeliveryError], str], ...] = (
    ((AddressRefused,), PermanentError, "endpoint address refused by the outbound policy"),
    (
        (api_errors.PermissionDenied, api_errors.Unauthenticated),
        CredentialsRefused,
        "Pub/Sub refused the credentials: {name}",
    ),
    (
        (api_errors.NotFound, api_errors.InvalidArgument, api_errors.FailedPrecondition),
        PermanentError,
        "Pub/Sub refused the publish: {name}",
    ),
    ((api_errors.GoogleAPICallError,), RetryableError, "Pub/Sub unavailable: {name}"),
    ((auth_errors.TransportError,), RetryableError, "token endpoint unreachable"),
    ((auth_errors.RefreshError,), CredentialsRefused, "Google refused the service account"),
    ((socket.gaierror,), RetryableError, "the endpoint host name does not resolve"),
    ((TimeoutError,), RetryableError, "timed out waiting for Pub/Sub"),
    ((OSError,), RetryableError, "endpoint unavailable: {name}"),
)
_SDK_ERRORS = tuple(t for types, _, _ in _FAILURES for t in types)


@contextlib.contextmanager
def _map_errors() -> Iterator[None]:
    """google-api-core / google-auth / socket errors → RetryableError / PermanentError.

    gRPC status messages come from the server and name the topic, never the key; a token
    refresh that the token endpoint itself calls retryable stays retryable.
    """
    try:
        yield
    except (RetryableError, PermanentError):
        raise
    except _SDK_ERRORS as exc:
        if isinstance(exc, auth_errors.RefreshError) and exc.retryable:
            raise RetryableError("token refresh failed; Google says to retry") from exc
        kind, message = next((k, m) for types, k, m in _FAILURES if isinstance(exc, types))
        raise kind(message.format(name=type(exc).__name__)) from exc


class PubSubSink:
    """Validates `gcp_pubsub` config objects and opens one client per destination."""

    type = "gcp_pubsub"

    def validate(
        self, raw: Any, errors: FieldErrors, path: str, settings: Settings
    ) -> tuple[Config, Credentials]:
        """`project_id`, `topic` (alias `topic_name`) and `service_account_json` (alias
        `credentials_json`, write-only; an object or a JSON string of one). The service
        account may be left out only when an emulator-style endpoint is configured."""
        raw = config_object(errors, raw, path, self.type)
        known = ("project_id", "topic", "topic_name", "service_account_json", "credentials_json")
        unknown_fields(errors, raw, path, known)
        project_id = string(errors, raw, path, "project_id", max_length=100)
        if project_id is not None and not PROJECT_ID.match(project_id):
            errors.add(f"{path}.project_id", "must be a Google Cloud project id.")
            project_id = None
        topic = string(errors, raw, path, "topic", aliases=("topic_name",), max_length=255)
        if topic is not None and not TOPIC_ID.match(topic):
            errors.add(f"{path}.topic", "must be a Pub/Sub topic id (3-255 characters).")
            topic = None
        credentials: Credentials = {}
        account = _service_account(errors, raw, path, required=not settings.gcp_pubsub_endpoint)
        if account is not None:
            credentials["service_account_json"] = account
        return {"project_id": project_id, "topic": topic}, credentials

    async def open(self, target: Target, settings: Settings) -> Publisher:
        """A publisher whose client is created on its first publish."""
        return PubSubPublisher(target, settings)

    async def aclose(self) -> None:
        """Nothing process-wide: every publisher owns its channel."""


def _service_account(
    errors: FieldErrors, raw: dict[str, Any], path: str, *, required: bool
) -> dict[str, Any] | None:
    """The service account as an object, never its content in errors.

    Shape only, as the contract says: the key itself (email, private key) is proven by the
    first delivery. The token endpoint is checked because a token refresh would call it.
    """
    field = f"{path}.service_account_json"
    value = pick(errors, raw, path, "service_account_json", ("credentials_json",))
    if value is None:
        if required:
            errors.add(field, "is required.")
        return None
    if isinstance(value, str):
        try:
            value = orjson.loads(value) if len(value) <= MAX_SERVICE_ACCOUNT_CHARS else None
        except orjson.JSONDecodeError:
            value = None
    if not isinstance(value, dict) or value.get("type") != "service_account":
        errors.add(field, "must be a service account key (a JSON object of type service_account).")
        return None
    if value.get("token_uri", GOOGLE_OAUTH2_ENDPOINT) != GOOGLE_OAUTH2_ENDPOINT:
        errors.add(field, f"token_uri must be {GOOGLE_OAUTH2_ENDPOINT}.")
        return None
    return value


SINK = PubSubSink()
