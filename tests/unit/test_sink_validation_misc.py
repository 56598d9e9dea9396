"""Config validation of the rabbitmq, kafka, hookdeck, gcp_pubsub and azure_servicebus sinks:
aliases, both-given errors, unknown fields, the AMQP URL split, credentials kept apart."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from api.errors import RequestValidationError
from api.validation import create_destination
from pipeline.settings import Settings
from pipeline.sinks import load_sink
from pipeline.sinks.base import PermanentError
from pipeline.sinks.fields import FieldErrors

SETTINGS = Settings()


def validate(sink_type: str, raw: Any, settings: Settings = SETTINGS) -> tuple[Any, Any, Any]:
    errors = FieldErrors()
    config, credentials = load_sink(sink_type).validate(raw, errors, sink_type, settings)
    return config, credentials, errors.by_field


def accepted(sink_type: str, raw: Any, settings: Settings = SETTINGS) -> tuple[Any, Any]:
    config, credentials, errors = validate(sink_type, raw, settings)
    assert not errors
    shown = orjson.dumps(list(config.values())).decode()
    for value in credentials.values():
        assert orjson.dumps(value).decode().strip('"') not in shown
    return config, credentials


def refused(sink_type: str, raw: Any, settings: Settings = SETTINGS) -> dict[str, list[str]]:
    _, _, errors = validate(sink_type, raw, settings)
    assert errors
    return dict(errors)


# rabbitmq


def test_rabbitmq_amqp_url_is_split_into_host_and_credentials() -> None:
    config, credentials = accepted(
        "rabbitmq", {"server_url": "amqp://app:s3cr%40t@rabbit.example:5672/", "exchange": "ev"}
    )
    assert config == {"server_url": "rabbit.example:5672", "exchange": "ev"}
    assert credentials == {"username": "app", "password": "s3cr@t"}


def test_rabbitmq_host_port_and_separate_credentials() -> None:
    config, credentials = accepted(
        "rabbitmq",
        {"server_url": "rabbitmq:5672", "exchange": "ev", "username": "app", "password": "pw-1"},
    )
    assert config == {"server_url": "rabbitmq:5672", "exchange": "ev"}
    assert credentials == {"username": "app", "password": "pw-1"}


def test_rabbitmq_tls_and_vhost_survive_the_split() -> None:
    config, credentials = accepted(
        "rabbitmq", {"server_url": "amqps://app:pw-1@mq.example/tenant%2Fone", "exchange": "ev"}
    )
    assert config["server_url"] == "amqps://mq.example/tenant%2Fone"
    assert credentials == {"username": "app", "password": "pw-1"}
    # What the API shows validates again as the same thing (a PATCH round trip).
    again, _ = accepted("rabbitmq", {"server_url": config["server_url"], "exchange": "ev"})
    assert again == config


@pytest.mark.parametrize(
    "server_url",
    [
        "http://rabbit.example",
        "amqp://",
        "rabbit.example:0",
        "rabbit.example:99999",
        "u:p@rabbit.example",
        "rabbit.example/vhost",
        "amqp://rabbit.example/?heartbeat=5",
        "",
        7,
    ],
)
def test_rabbitmq_bad_server_urls(server_url: Any) -> None:
    assert "rabbitmq.server_url" in refused("rabbitmq", {"server_url": server_url, "exchange": "e"})


def test_rabbitmq_password_given_twice_is_an_error() -> None:
    errors = refused(
        "rabbitmq",
        {"server_url": "amqp://u:p@h", "exchange": "e", "password": "other"},
    )
    assert list(errors) == ["rabbitmq.password"]


def test_rabbitmq_required_and_unknown_fields() -> None:
    errors = refused("rabbitmq", {"vhost": "/"})
    assert set(errors) == {"rabbitmq.server_url", "rabbitmq.exchange", "rabbitmq.vhost"}
    assert "rabbitmq" in refused("rabbitmq", None)


@given(st.text(min_size=1, max_size=40).filter(str.strip))
def test_rabbitmq_any_password_in_a_url_goes_to_credentials_only(password: str) -> None:
    url = f"amqp://user:{quote(password, safe='')}@rabbit.example:5672/"
    config, credentials, errors = validate("rabbitmq", {"server_url": url, "exchange": "e"})
    assert not errors
    assert credentials["password"] == password
    assert config["server_url"] == "rabbit.example:5672"


# kafka


@pytest.mark.parametrize(
    "servers", ["b1.example:9092,b2.example:9093", ["b1.example:9092", "b2.example:9093"]]
)
def test_kafka_bootstrap_servers_as_string_or_list(servers: Any) -> None:
    config, credentials = accepted("kafka", {"bootstrap_servers": servers, "topic": "events"})
    assert config == {"bootstrap_servers": "b1.example:9092,b2.example:9093", "topic": "events"}
    assert credentials == {}


@pytest.mark.parametrize(
    "servers", ["b1.example", "b1.example:0", "b1:x", "::1:9092", [], [9092], "a:1," * 20, ""]
)
def test_kafka_bad_bootstrap_servers(servers: Any) -> None:
    errors = refused("kafka", {"bootstrap_servers": servers, "topic": "t"})
    assert "kafka.bootstrap_servers" in errors


def test_kafka_sasl_credentials_are_kept_apart() -> None:
    config, credentials = accepted(
        "kafka",
        {
            "bootstrap_servers": "[::1]:9092",
            "topic": "t",
            "username": "u",
            "password": "p4ss",
            "sasl_mechanism": "SCRAM-SHA-512",
        },
    )
    assert config == {
        "bootstrap_servers": "[::1]:9092",
        "topic": "t",
        "sasl_mechanism": "SCRAM-SHA-512",
    }
    assert credentials == {"username": "u", "password": "p4ss"}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"username": "u"}, "kafka.password"),
        ({"password": "p"}, "kafka.username"),
        ({"sasl_mechanism": "PLAIN"}, "kafka.sasl_mechanism"),
        ({"username": "u", "password": "p", "sasl_mechanism": "GSSAPI"}, "kafka.sasl_mechanism"),
        ({"acks": "all"}, "kafka.acks"),
        ({"topic": "bad topic"}, "kafka.topic"),
        ({"topic": ".."}, "kafka.topic"),
    ],
)
def test_kafka_bad_fields(extra: dict[str, Any], field: str) -> None:
    assert field in refused("kafka", {"bootstrap_servers": "b:9092", "topic": "t", **extra})


# hookdeck


def hookdeck_token(source: str = "src_abc123", key: str = "k3y") -> str:
    return base64.b64encode(f"{source}:{key}".encode()).decode()


@pytest.mark.parametrize("name", ["token", "api_key"])
def test_hookdeck_token_and_its_alias(name: str) -> None:
    config, credentials = accepted("hookdeck", {name: hookdeck_token()})
    assert config == {}
    assert credentials == {"token": hookdeck_token()}


def test_hookdeck_token_and_alias_together_is_an_error() -> None:
    errors = refused("hookdeck", {"token": hookdeck_token(), "api_key": hookdeck_token()})
    assert list(errors) == ["hookdeck.api_key"]


@pytest.mark.parametrize(
    "token",
    [
        "not base64!",
        base64.b64encode(b"no-colon").decode(),
        hookdeck_token("src/../x"),
        "",
        "\x80non-ascii",  # was a 500 (found by the schema fuzzer)
    ],
)
def test_hookdeck_bad_tokens(token: str) -> None:
    assert "hookdeck.token" in refused("hookdeck", {"token": token})


def test_hookdeck_required_and_unknown_fields() -> None:
    assert set(refused("hookdeck", {"url": "https://x"})) == {"hookdeck.token", "hookdeck.url"}


# gcp_pubsub


def service_account(**changes: Any) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "herald-test",
        "private_key": pem,
        "client_email": "herald@herald-test.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
        **changes,
    }


ACCOUNT = service_account()


@pytest.mark.parametrize(
    "raw",
    [
        {"project_id": "herald-test", "topic": "events", "service_account_json": ACCOUNT},
        {
            "project_id": "herald-test",
            "topic_name": "events",
            "credentials_json": orjson.dumps(ACCOUNT).decode(),
        },
    ],
    ids=["names-and-object", "aliases-and-json-string"],
)
def test_gcp_pubsub_names_and_aliases(raw: dict[str, Any]) -> None:
    config, credentials = accepted("gcp_pubsub", raw)
    assert config == {"project_id": "herald-test", "topic": "events"}
    assert credentials == {"service_account_json": ACCOUNT}
    assert ACCOUNT["private_key"] not in orjson.dumps(config).decode()


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"topic": "a-topic", "topic_name": "b-topic"}, "gcp_pubsub.topic_name"),
        (
            {"service_account_json": ACCOUNT, "credentials_json": ACCOUNT},
            "gcp_pubsub.credentials_json",
        ),
        ({"service_account_json": "{not json"}, "gcp_pubsub.service_account_json"),
        ({"service_account_json": {"type": "user"}}, "gcp_pubsub.service_account_json"),
        (
            {"service_account_json": service_account(token_uri="http://169.254.169.254/")},
            "gcp_pubsub.service_account_json",
        ),
        ({"project_id": "X"}, "gcp_pubsub.project_id"),
        ({"topic": "goog-reserved"}, "gcp_pubsub.topic"),
        ({"region": "eu"}, "gcp_pubsub.region"),
    ],
)
def test_gcp_pubsub_bad_fields(extra: dict[str, Any], field: str) -> None:
    raw = {"project_id": "herald-test", "topic": "events", "service_account_json": ACCOUNT}
    errors = refused("gcp_pubsub", {**raw, **extra})
    assert field in errors
    assert ACCOUNT["private_key"] not in orjson.dumps(errors).decode()


def test_gcp_pubsub_service_account_is_required_unless_an_emulator_is_configured() -> None:
    raw = {"project_id": "herald-test", "topic": "events"}
    assert "gcp_pubsub.service_account_json" in refused("gcp_pubsub", raw)
    emulator = Settings(gcp_pubsub_endpoint="127.0.0.1:8085")
    assert accepted("gcp_pubsub", raw, emulator) == (raw, {})


def test_gcp_pubsub_service_account_becomes_credentials_offline() -> None:
    from pipeline.sinks.gcp_pubsub import _credentials

    credentials = _credentials(ACCOUNT)
    assert credentials.service_account_email == ACCOUNT["client_email"]
    for unusable in (
        service_account(private_key="-----BEGIN PRIVATE KEY-----\nnope\n"),
        {"type": "service_account", "project_id": "herald-test"},  # shape only on create
    ):
        with pytest.raises(PermanentError) as caught:
            _credentials(unusable)
        assert caught.value.__cause__ is None and caught.value.__context__ is None


# azure_servicebus

CONNECTION = (
    "Endpoint=sb://herald.servicebus.windows.net/;SharedAccessKeyName=send;"
    "SharedAccessKey=c2VjcmV0LWtleQ=="
)


@pytest.mark.parametrize("name", ["name", "queue_name"])
def test_azure_servicebus_name_and_its_alias(name: str) -> None:
    config, credentials = accepted(
        "azure_servicebus", {name: "events", "connection_string": CONNECTION}
    )
    assert config == {"name": "events"}
    assert credentials == {"connection_string": CONNECTION}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (
            {"name": "a", "queue_name": "b", "connection_string": CONNECTION},
            "azure_servicebus.queue_name",
        ),
        ({"name": "events"}, "azure_servicebus.connection_string"),
        (
            {"name": "events", "connection_string": "Endpoint=https://x/;SharedAccessKey=k"},
            "azure_servicebus.connection_string",
        ),
        (
            {"name": "events", "connection_string": "Endpoint=sb://x/;SharedAccessKeyName=n"},
            "azure_servicebus.connection_string",
        ),
        (
            {"name": "events", "connection_string": CONNECTION + ";EntityPath=other"},
            "azure_servicebus.connection_string",
        ),
        ({"connection_string": CONNECTION}, "azure_servicebus.name"),
        (
            {"name": "events", "connection_string": CONNECTION, "namespace": "x"},
            "azure_servicebus.namespace",
        ),
    ],
)
def test_azure_servicebus_bad_fields(raw: dict[str, Any], field: str) -> None:
    errors = refused("azure_servicebus", raw)
    assert field in errors
    assert "c2VjcmV0LWtleQ" not in orjson.dumps(errors).decode()


def test_azure_servicebus_shared_access_signature_and_entity_path() -> None:
    signature = (
        "Endpoint=sb://herald.servicebus.windows.net/;"
        "SharedAccessSignature=SharedAccessSignature sr=x&sig=y&se=1&skn=send;EntityPath=events"
    )
    accepted("azure_servicebus", {"name": "events", "connection_string": signature})


async def test_azure_servicebus_default_factory_builds_the_sdk_client() -> None:
    from azure.servicebus.aio import ServiceBusClient, ServiceBusSender

    from pipeline.sinks.azure_servicebus import client_factory
    from pipeline.sinks.pinned import server_name_context

    context = server_name_context("herald.servicebus.windows.net")
    client = client_factory(CONNECTION, "sb://192.0.2.10:5671", context)
    assert isinstance(client, ServiceBusClient)
    # The SDK dials the given (checked) address over AMQP, not the namespace's name.
    assert client._config.custom_endpoint_hostname == "192.0.2.10"
    assert client._config.transport_type.name == "Amqp"
    sender = client.get_queue_sender("events")
    assert isinstance(sender, ServiceBusSender)
    await sender.close()
    await client.close()


# Through the API's create validation: dotted paths, the type's object required.


@pytest.mark.parametrize(
    ("destination_type", "config"),
    [
        ("rabbitmq", {"server_url": "amqp://u:p@h:5672", "exchange": "e"}),
        ("kafka", {"bootstrap_servers": "b:9092", "topic": "t"}),
        ("hookdeck", {"api_key": hookdeck_token()}),
        ("gcp_pubsub", {"project_id": "herald-test", "topic": "evs", "credentials_json": ACCOUNT}),
        ("azure_servicebus", {"queue_name": "q", "connection_string": CONNECTION}),
    ],
)
def test_create_accepts_each_type(destination_type: str, config: dict[str, Any]) -> None:
    body = {"name": "d", "type": destination_type, destination_type: config, "events": ["a.b"]}
    fields = create_destination(body, SETTINGS)
    assert fields["type"] == destination_type
    assert fields["credentials"] or destination_type == "kafka"


@pytest.mark.parametrize(
    "destination_type", ["rabbitmq", "kafka", "hookdeck", "gcp_pubsub", "azure_servicebus"]
)
def test_create_needs_the_config_object(destination_type: str) -> None:
    body = {"name": "d", "type": destination_type, "events": ["a.b"]}
    with pytest.raises(RequestValidationError) as caught:
        create_destination(body, SETTINGS)
    assert destination_type in caught.value.errors
