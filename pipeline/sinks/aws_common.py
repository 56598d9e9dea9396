"""What the four AWS sinks share: credential and name checks, boto3 clients, error mapping.

Failures are mapped once, in `map_error`, most specific first:

    botocore ClientError, by its error code (then by HTTP status for codes not listed)
        throttling, 5xx, RequestTimeout, ...           → RetryableError
        a message refused (its characters, its detail)  → EventRejected
        access denied, bad key or signature             → CredentialsRefused
        missing resource, bad parameter, ...            → PermanentError
    ParamValidationError, NoCredentialsError, ...       → PermanentError
    ConnectTimeoutError, ReadTimeoutError               → RetryableError
    EndpointConnectionError, any other BotoCoreError    → RetryableError

Not a context manager like the webhook's `_map_errors()`: an exception raised from a
context manager's `__exit__` always carries the original as `__context__`, and a botocore
ClientError must not travel with Herald's errors (AWS error bodies can quote the access
key id; S3's do). `AwsClient.call` raises the mapped error outside the `except` block, so
its chain holds only botocore's transport errors, which name the endpoint and nothing else.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import orjson
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from pipeline.settings import Settings
from pipeline.sinks.aws_pool import CallPool, Lane
from pipeline.sinks.base import (
    Credentials,
    CredentialsRefused,
    DeliveryError,
    DeliveryResult,
    EventRejected,
    PermanentError,
    RetryableError,
)
from pipeline.sinks.fields import FieldErrors, string

REGION = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+-[0-9]{1,2}$")
ACCESS_KEY_ID = re.compile(r"^\w{16,128}$", re.ASCII)
MAX_SECRET = 256

RETRYABLE_CODES = frozenset(
    {
        "BandwidthLimitExceeded",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "InternalServiceError",
        "KMSThrottlingException",
        "KmsThrottled",
        "LimitExceededException",  # Kinesis: too many requests for the stream
        "OperationAborted",
        "PriorRequestNotComplete",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestTimeTooSkewed",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "SlowDown",
        "ThrottledException",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
    }
)
PERMANENT_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AllAccessDisabled",
        "AuthorizationError",
        "AuthorizationHeaderMalformed",
        "AWS.SimpleQueueService.NonExistentQueue",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "InvalidAccessKeyId",
        "InvalidArgument",
        "InvalidBucketName",
        "InvalidClientTokenId",
        "InvalidMessageContents",
        "InvalidParameterValue",
        "InvalidParameterValueException",
        "InvalidSignatureException",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KmsAccessDenied",
        "KmsDisabled",
        "MalformedDetail",
        "MissingParameter",
        "NoSuchBucket",
        "NonExistentQueue",
        "NotAuthorizedForDetailTypeException",
        "NotAuthorizedForSourceException",
        "PermanentRedirect",
        "QueueDoesNotExist",
        "ResourceNotFoundException",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "ValidationError",
        "ValidationException",
    }
)
# Permanent codes that say the credentials (or their permissions) were refused: a key
# created seconds ago is refused like this until AWS has it everywhere.
AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
# Permanent codes that refuse this message, not the destination.
EVENT_CODES = frozenset({"InvalidMessageContents", "MalformedDetail"})
# An error code is quoted in messages only if it looks like one.
_SAFE_CODE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class CredentialFields:
    """The config fields an AWS type takes its key pair from: canonical names, then aliases."""

    key: str
    secret: str
    key_aliases: tuple[str, ...] = ()
    secret_aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Every accepted field name, aliases included."""
        return (self.key, *self.key_aliases, self.secret, *self.secret_aliases)

    def given(self, raw: Mapping[str, Any], key: bool) -> bool:
        """Whether the key (or the secret) was supplied under any of its names."""
        names = (self.key, *self.key_aliases) if key else (self.secret, *self.secret_aliases)
        return any(raw.get(name) is not None for name in names)

    def key_pair(self, credentials: Mapping[str, Any]) -> tuple[str, str] | None:
        """(access key id, secret) from validated credentials; None if there are none."""
        key, secret = credentials.get(self.key), credentials.get(self.secret)
        if isinstance(key, str) and isinstance(secret, str):
            return key, secret
        return None


# aws_sqs, aws_kinesis and aws_s3 name the pair key/secret, with aliases.
KEY_AND_SECRET = CredentialFields("key", "secret", ("access_key",), ("secret_key",))
# aws_eventbridge names it access_key_id/secret_access_key, without aliases.
ACCESS_KEY_ID_AND_SECRET = CredentialFields("access_key_id", "secret_access_key")


def credentials(
    errors: FieldErrors,
    raw: Mapping[str, Any],
    path: str,
    fields: CredentialFields,
    settings: Settings,
) -> Credentials:
    """The key pair under its canonical names, or {} when Herald's own chain may be used.

    Messages never quote the values.
    """
    key = string(errors, raw, path, fields.key, required=False, aliases=fields.key_aliases)
    secret = string(
        errors,
        raw,
        path,
        fields.secret,
        required=False,
        aliases=fields.secret_aliases,
        max_length=MAX_SECRET,
    )
    key_given, secret_given = fields.given(raw, key=True), fields.given(raw, key=False)
    if not key_given and not secret_given:
        if not settings.aws_default_credentials_allowed:
            errors.add(
                f"{path}.{fields.key}",
                f"credentials are required: give '{fields.key}' and '{fields.secret}'.",
            )
        return {}
    if key_given != secret_given:
        missing, other = (fields.secret, fields.key) if key_given else (fields.key, fields.secret)
        errors.add(f"{path}.{missing}", f"is required when '{other}' is given.")
        return {}
    if key is not None and not ACCESS_KEY_ID.match(key):
        errors.add(
            f"{path}.{fields.key}", "must be an AWS access key id (16 to 128 letters and digits)."
        )
        return {}
    if key is None or secret is None:
        return {}
    return {fields.key: key, fields.secret: secret}


def matching(
    errors: FieldErrors,
    raw: Mapping[str, Any],
    path: str,
    name: str,
    pattern: re.Pattern[str],
    what: str,
    *,
    required: bool = True,
) -> str | None:
    """A string field that must match `pattern`; `what` describes it in the message."""
    value = string(errors, raw, path, name, required=required, max_length=1024)
    if value is not None and not pattern.match(value):
        errors.add(f"{path}.{name}", f"must be {what}.")
        return None
    return value


def region(
    errors: FieldErrors, raw: Mapping[str, Any], path: str, *, required: bool = True
) -> str | None:
    """An AWS region name such as us-east-1."""
    return matching(
        errors, raw, path, "region", REGION, "an AWS region such as 'us-east-1'", required=required
    )


def metadata(delivery_id: str, event: Mapping[str, Any]) -> dict[str, str]:
    """The delivery's identity as name → value, for message attributes and object metadata."""
    values = {
        "herald-event-id": event.get("id"),
        "herald-event-type": event.get("type"),
        "herald-delivery-id": delivery_id,
        "herald-created-at": event.get("created_at"),
    }
    return {name: value for name, value in values.items() if isinstance(value, str) and value}


def result(response: Mapping[str, Any], **shown: Any) -> DeliveryResult:
    """A DeliveryResult from a boto3 response: its HTTP status and a short JSON summary."""
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return DeliveryResult(
        response_status=status if isinstance(status, int) else None,
        response_body=orjson.dumps(shown).decode(),
    )


def error_for_code(service: str, code: Any, status: int | None) -> DeliveryError:
    """The error for an AWS error code: by the code's known meaning, else by HTTP status."""
    shown = code if isinstance(code, str) and _SAFE_CODE.match(code) else "unknown error"
    message = f"{service} refused the request: {shown}"
    if code in EVENT_CODES:
        return EventRejected(message, response_status=status)
    if code in AUTH_CODES:
        return CredentialsRefused(message, response_status=status)
    if code in PERMANENT_CODES:
        return PermanentError(message, response_status=status)
    if code in RETRYABLE_CODES or status is None or status >= 500 or status == 429:
        return RetryableError(message, response_status=status)
    return PermanentError(message, response_status=status)


def map_error(service: str, exc: BaseException) -> tuple[DeliveryError, BaseException | None]:
    """The Herald error for a botocore exception, and the cause it may carry (None for a
    ClientError: only its code is kept)."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = exc.response.get("Error", {}).get("Code")
        return error_for_code(service, code, status if isinstance(status, int) else None), None
    if isinstance(exc, ParamValidationError):
        return PermanentError(f"{service} rejected the request parameters"), exc
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        # The client resolved its credentials when it was created: retrying cannot help.
        return PermanentError(f"{service}: no AWS credentials available to Herald"), exc
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return RetryableError(f"{service}: timed out"), exc
    if isinstance(exc, EndpointConnectionError):
        return RetryableError(f"{service}: could not connect to the endpoint"), exc
    return RetryableError(f"{service} request failed: {type(exc).__name__}"), exc


class AwsClient:
    """One boto3 client (one destination's) and its lane onto the sink's threads."""

    def __init__(self, service: str, client: Any, lane: Lane, deadline_s: float) -> None:
        self._service = service
        self._client = client
        self._lane = lane
        self._deadline_s = deadline_s
        self._closed = False

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """Run one operation (boto3's snake_case name) off the event loop, within the
        delivery timeout counted from now (waiting for a thread included); raise a
        RetryableError or PermanentError for any botocore failure or the timeout."""
        method = functools.partial(getattr(self._client, operation), **params)
        try:
            response: dict[str, Any] = await self._lane.run(method, self._deadline_s)
            return response
        except (ClientError, BotoCoreError) as exc:
            error, cause = map_error(self._service, exc)
        except TimeoutError:
            error, cause = RetryableError(f"{self._service}: timed out"), None
        raise error from cause  # outside the except block, so no implicit __context__

    async def close(self) -> None:
        """Close the client's connection pool; calling it again does nothing."""
        if not self._closed:
            self._closed = True
            self._client.close()


class AwsClients:
    """Creates the boto3 clients of one AWS sink and owns the threads they run on.

    Clients come from one boto3 session, so service models load once; sessions are not
    thread-safe, hence the lock.
    """

    def __init__(self, service: str) -> None:
        self._service = service
        self._session: boto3.session.Session | None = None
        self._lock = threading.Lock()
        self._pool: CallPool | None = None

    def _pool_for(self, settings: Settings) -> CallPool:
        if self._pool is None:
            self._pool = CallPool(self._service, settings.sink_max_in_flight)
        return self._pool

    async def open(
        self,
        region_name: str,
        key_pair: tuple[str, str] | None,
        settings: Settings,
        **config: Any,
    ) -> AwsClient:
        """A client for `region_name`, signing with `key_pair` (None: Herald's own chain,
        which validation admits only when the operator allowed it). `config` adds
        botocore Config options."""
        pool = self._pool_for(settings)
        create = functools.partial(self._create, region_name, key_pair, settings, config)
        client = await pool.run_unlimited(create)
        # Calls to one endpoint share its slots: the operator's URL, or AWS's in the region.
        lane = pool.lane(settings.aws_endpoint_url or region_name)
        return AwsClient(self._service, client, lane, settings.delivery_timeout_s)

    def _create(
        self,
        region_name: str,
        key_pair: tuple[str, str] | None,
        settings: Settings,
        config: dict[str, Any],
    ) -> Any:
        boto_config = BotoConfig(
            connect_timeout=settings.delivery_timeout_s,
            read_timeout=settings.delivery_timeout_s,
            # One request per attempt: Herald's retry tiers do the retrying, and every
            # attempt in the log is one request.
            retries={"mode": "standard", "total_max_attempts": 1},
            max_pool_connections=settings.sink_max_in_flight_per_destination,
            # Only Herald's setting may redirect requests, never AWS_ENDPOINT_URL_* variables.
            ignore_configured_endpoint_urls=True,
            **config,
        )
        key_id, secret = key_pair if key_pair is not None else (None, None)
        with self._lock:
            if self._session is None:
                self._session = boto3.session.Session()
            # aws_endpoint_url is set by the operator (moto, LocalStack), not by a tenant,
            # so it needs no outbound address check; without it, requests go to AWS's own
            # regional endpoint, whatever host a tenant's config names.
            return self._session.client(
                self._service,
                region_name=region_name,
                endpoint_url=settings.aws_endpoint_url,
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
                config=boto_config,
            )

    async def aclose(self) -> None:
        """Stop the threads, on worker shutdown, after the publishers were closed."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()
