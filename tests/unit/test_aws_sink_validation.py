"""The AWS sinks' config validation and error mapping, without a server."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from hypothesis import assume, given
from hypothesis import strategies as st

from pipeline.settings import Settings
from pipeline.sinks import load_sink
from pipeline.sinks.aws_common import error_for_code, map_error
from pipeline.sinks.aws_eventbridge import entry_failure
from pipeline.sinks.aws_sqs import region_of
from pipeline.sinks.base import CredentialsRefused, PermanentError, RetryableError
from pipeline.sinks.fields import FieldErrors

KEY_ID = "AKIAUNITTESTKEY00000"
SECRET = "unit+test/SECRET/0000000000000000000000"
STRICT = Settings()
LENIENT = Settings(aws_default_credentials_allowed=True)

BASES: dict[str, dict[str, Any]] = {
    "aws_sqs": {"queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"},
    "aws_kinesis": {"stream_name": "orders", "region": "eu-west-1"},
    "aws_s3": {"bucket": "orders-archive", "region": "eu-west-1"},
    "aws_eventbridge": {"event_bus_name": "orders", "region": "eu-west-1"},
}
ALIASED = ("aws_sqs", "aws_kinesis", "aws_s3")


def validate(
    sink_type: str, raw: Any, settings: Settings = STRICT
) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]]]:
    errors = FieldErrors()
    config, credentials = load_sink(sink_type).validate(raw, errors, sink_type, settings)
    return config, credentials, errors.by_field


@pytest.mark.parametrize("sink_type", ALIASED)
@pytest.mark.parametrize(
    ("key_name", "secret_name"),
    [("key", "secret"), ("access_key", "secret_key"), ("access_key", "secret")],
)
def test_key_and_secret_under_either_name(sink_type: str, key_name: str, secret_name: str) -> None:
    raw = {**BASES[sink_type], key_name: KEY_ID, secret_name: SECRET}
    config, credentials, errors = validate(sink_type, raw)
    assert errors == {}
    assert credentials == {"key": KEY_ID, "secret": SECRET}
    assert config == BASES[sink_type]


def test_eventbridge_takes_its_own_names() -> None:
    raw = {**BASES["aws_eventbridge"], "access_key_id": KEY_ID, "secret_access_key": SECRET}
    config, credentials, errors = validate("aws_eventbridge", raw)
    assert errors == {}
    assert credentials == {"access_key_id": KEY_ID, "secret_access_key": SECRET}
    assert config == BASES["aws_eventbridge"]


@pytest.mark.parametrize("alias", ["key", "secret", "access_key", "secret_key"])
def test_eventbridge_has_no_aliases(alias: str) -> None:
    raw = {
        **BASES["aws_eventbridge"],
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
        alias: "x" * 20,
    }
    assert validate("aws_eventbridge", raw)[2] == {
        f"aws_eventbridge.{alias}": ["is not a known field."]
    }


@pytest.mark.parametrize("sink_type", ALIASED)
@pytest.mark.parametrize(("name", "alias"), [("key", "access_key"), ("secret", "secret_key")])
def test_a_name_and_its_alias_together_is_an_error(sink_type: str, name: str, alias: str) -> None:
    raw = {**BASES[sink_type], "key": KEY_ID, "secret": SECRET, alias: KEY_ID}
    errors = validate(sink_type, raw)[2]
    assert list(errors) == [f"{sink_type}.{alias}"]
    assert "alias" in errors[f"{sink_type}.{alias}"][0]


@pytest.mark.parametrize("sink_type", sorted(BASES))
def test_unknown_fields_are_refused(sink_type: str) -> None:
    raw = {**BASES[sink_type], "endpoint_url": "http://169.254.169.254/"}
    errors = validate(sink_type, raw, LENIENT)[2]
    assert errors == {f"{sink_type}.endpoint_url": ["is not a known field."]}


@pytest.mark.parametrize("sink_type", sorted(BASES))
def test_no_credentials_are_refused_by_default(sink_type: str) -> None:
    errors = validate(sink_type, BASES[sink_type])[2]
    key = "access_key_id" if sink_type == "aws_eventbridge" else "key"
    assert list(errors) == [f"{sink_type}.{key}"]
    assert "credentials are required" in errors[f"{sink_type}.{key}"][0]


@pytest.mark.parametrize("sink_type", sorted(BASES))
def test_no_credentials_when_the_operator_allows_herald_s_own(sink_type: str) -> None:
    config, credentials, errors = validate(sink_type, BASES[sink_type], LENIENT)
    assert (config, credentials, errors) == (BASES[sink_type], {}, {})


@pytest.mark.parametrize("sink_type", ALIASED)
def test_half_a_key_pair_is_an_error_even_when_allowed(sink_type: str) -> None:
    assert list(validate(sink_type, {**BASES[sink_type], "access_key": KEY_ID}, LENIENT)[2]) == [
        f"{sink_type}.secret"
    ]
    assert list(validate(sink_type, {**BASES[sink_type], "secret": SECRET}, LENIENT)[2]) == [
        f"{sink_type}.key"
    ]


@given(st.text(alphabet=st.characters(codec="ascii"), min_size=12, max_size=200))
def test_credentials_never_echoed_in_config_or_errors(value: str) -> None:
    for sink_type, (key, secret) in {
        "aws_sqs": ("access_key", "secret_key"),
        "aws_eventbridge": ("access_key_id", "secret_access_key"),
    }.items():
        raw = {**BASES[sink_type], key: value, secret: value}
        config, _, errors = validate(sink_type, raw)
        # A value that is part of what the output holds anyway (a field name, a message)
        # cannot show an echo.
        assume(all(value not in text for text in _fixed_output(sink_type, key, secret)))
        assert value not in orjson.dumps([config, errors]).decode()


def _fixed_output(sink_type: str, key: str, secret: str) -> list[str]:
    """The output for a valid and an invalid key pair: the text every output may hold."""
    texts = []
    for pair in ((KEY_ID, SECRET), ("!" * 12, "!" * 12)):
        config, _, errors = validate(sink_type, {**BASES[sink_type], key: pair[0], secret: pair[1]})
        texts.append(orjson.dumps([config, errors]).decode().replace("!" * 12, ""))
    return texts


@pytest.mark.parametrize(
    ("sink_type", "field", "value"),
    [
        ("aws_kinesis", "region", None),
        ("aws_kinesis", "region", "Mars-1"),
        ("aws_kinesis", "stream_name", "has space"),
        ("aws_s3", "bucket", "Not_A_Bucket"),
        ("aws_s3", "prefix", "a/../b"),
        ("aws_s3", "region", None),
        ("aws_eventbridge", "event_bus_name", "bus name"),
        ("aws_eventbridge", "region", None),
        ("aws_sqs", "queue_url", "ftp://sqs.eu-west-1.amazonaws.com/123456789012/q"),
        ("aws_sqs", "queue_url", "https://sqs.eu-west-1.amazonaws.com/orders"),
        ("aws_sqs", "region", "us-east-2"),  # not the queue URL's region
    ],
)
def test_bad_values(sink_type: str, field: str, value: Any) -> None:
    raw = {**BASES[sink_type], field: value}
    assert list(validate(sink_type, raw, LENIENT)[2]) == [f"{sink_type}.{field}"]


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/q", "eu-west-1"),
        ("https://us-west-2.queue.amazonaws.com/123456789012/q", "us-west-2"),
        ("https://queue.amazonaws.com/123456789012/q", "us-east-1"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q", "cn-north-1"),
        ("https://vpce-0a1b-2c3d.sqs.ap-south-1.vpce.amazonaws.com/123456789012/q", "ap-south-1"),
        ("http://127.0.0.1:4566/123456789012/q", None),
    ],
)
def test_sqs_region_from_the_queue_url(url: str, region: str | None) -> None:
    assert region_of(url) == region


def test_sqs_needs_a_region_when_the_url_names_none() -> None:
    url = "http://127.0.0.1:4566/123456789012/q"
    assert list(validate("aws_sqs", {"queue_url": url}, LENIENT)[2]) == ["aws_sqs.region"]
    config, _, errors = validate("aws_sqs", {"queue_url": url, "region": "us-east-1"}, LENIENT)
    assert errors == {}
    assert config == {"queue_url": url, "region": "us-east-1"}


def test_sqs_message_group_id_is_for_fifo_queues() -> None:
    fifo = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo"
    raw = {"queue_url": fifo, "message_group_id": "tenant-7"}
    assert validate("aws_sqs", raw, LENIENT)[2] == {}
    standard = {**BASES["aws_sqs"], "message_group_id": "tenant-7"}
    assert list(validate("aws_sqs", standard, LENIENT)[2]) == ["aws_sqs.message_group_id"]


def test_s3_prefix_loses_its_slashes() -> None:
    raw = {**BASES["aws_s3"], "prefix": "/herald/events/"}
    assert validate("aws_s3", raw, LENIENT)[0]["prefix"] == "herald/events"


@pytest.mark.parametrize("sink_type", sorted(BASES))
def test_config_must_be_an_object(sink_type: str) -> None:
    assert sink_type in validate(sink_type, "nope")[2]


# Error mapping.


def _client_error(code: str, status: int, message: str = "") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "SendMessage")


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("ThrottlingException", 400, RetryableError),
        ("ProvisionedThroughputExceededException", 400, RetryableError),
        ("SlowDown", 503, RetryableError),
        ("RequestTimeout", 400, RetryableError),
        ("InternalError", 500, RetryableError),
        ("SomethingNew", 502, RetryableError),
        ("SomethingNew", 429, RetryableError),
        ("AccessDenied", 403, CredentialsRefused),
        ("InvalidClientTokenId", 403, CredentialsRefused),
        ("UnrecognizedClientException", 400, CredentialsRefused),
        ("SignatureDoesNotMatch", 403, CredentialsRefused),
        ("AWS.SimpleQueueService.NonExistentQueue", 400, PermanentError),
        ("QueueDoesNotExist", 400, PermanentError),
        ("ResourceNotFoundException", 400, PermanentError),
        ("NoSuchBucket", 404, PermanentError),
        ("InvalidParameterValue", 400, PermanentError),
        ("ValidationException", 400, PermanentError),
        ("SomethingNew", 400, PermanentError),
    ],
)
def test_client_errors_by_code(code: str, status: int, kind: type[Exception]) -> None:
    error, cause = map_error("sqs", _client_error(code, status))
    assert type(error) is kind
    assert cause is None
    assert error.response_status == status
    assert code in str(error)


def test_a_client_error_s_message_is_never_carried() -> None:
    leaky = _client_error("InvalidAccessKeyId", 403, f"The key {KEY_ID} does not exist")
    error, cause = map_error("s3", leaky)
    assert KEY_ID not in str(error)
    assert cause is None


def test_a_code_that_does_not_look_like_one_is_not_quoted() -> None:
    assert KEY_ID not in str(error_for_code("s3", f"<{KEY_ID}>", 400))


def test_transport_errors_are_retryable() -> None:
    unreachable = EndpointConnectionError(endpoint_url="http://127.0.0.1:1/")
    assert isinstance(map_error("sqs", unreachable)[0], RetryableError)
    timed_out = ReadTimeoutError(endpoint_url="http://127.0.0.1:1/")
    assert isinstance(map_error("sqs", timed_out)[0], RetryableError)


def test_eventbridge_entry_failures() -> None:
    assert entry_failure({"FailedEntryCount": 0, "Entries": [{"EventId": "e"}]}) is None
    throttled = {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "ThrottlingException"}]}
    assert isinstance(entry_failure(throttled), RetryableError)
    malformed = {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "MalformedDetail"}]}
    assert isinstance(entry_failure(malformed), PermanentError)
