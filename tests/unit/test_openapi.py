"""The OpenAPI spec: valid, complete against the routes and the contract, true to the code."""

from __future__ import annotations

import base64
import importlib
import pkgutil
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from pytest_aiohttp import AiohttpClient
from referencing import Registry
from referencing.jsonschema import DRAFT202012

import api.routes
from api import validation
from api.app import PUBLIC_PATHS
from api.app_keys import SETTINGS
from api.errors import ApiError, RequestValidationError
from api.index import present_attempt, present_delivery, present_event
from api.openapi import build_spec
from api.routes import docs
from api.routes.destinations import present
from pipeline.health import health_routes
from pipeline.settings import Settings
from pipeline.sinks import load_sink
from pipeline.sinks.fields import FieldErrors

SPEC = build_spec()
METHODS = ("get", "put", "post", "patch", "delete")
SCHEMAS = SPEC["components"]["schemas"]
CREATE = SCHEMAS["CreateEventDestinationRequest"]
RESPONSE = SCHEMAS["EventDestinationResponse"]

# The reference OpenAPI's per-type objects of the create call: (required, properties).
REFERENCE_REQUEST = {
    "webhook": (["url"], {"url", "secret"}),
    "aws_sqs": (["queue_url"], {"queue_url", "key", "secret"}),
    "aws_kinesis": (["stream_name", "region"], {"stream_name", "region", "key", "secret"}),
    "aws_s3": (["bucket", "region"], {"bucket", "region", "key", "secret"}),
    "aws_eventbridge": (
        ["event_bus_name", "region"],
        {"event_bus_name", "region", "access_key_id", "secret_access_key"},
    ),
    "gcp_pubsub": (["project_id", "topic"], {"project_id", "topic", "service_account_json"}),
    "rabbitmq": (["exchange", "server_url"], {"exchange", "server_url", "username", "password"}),
    "azure_servicebus": (["name"], {"name", "connection_string"}),
    "hookdeck": ([], {"token"}),
}

# Canonical name → alias, per type, as docs/api.md lists them (AWS EventBridge has none).
ALIASES = {
    "aws_sqs": {"key": "access_key", "secret": "secret_key"},
    "aws_kinesis": {"key": "access_key", "secret": "secret_key"},
    "aws_s3": {"key": "access_key", "secret": "secret_key"},
    "aws_eventbridge": {},
    "gcp_pubsub": {"topic": "topic_name", "service_account_json": "credentials_json"},
    "azure_servicebus": {"name": "queue_name"},
    "hookdeck": {"token": "api_key"},
}

CREDENTIALS = {
    "webhook": {"secret"},
    "aws_sqs": {"key", "access_key", "secret", "secret_key"},
    "aws_kinesis": {"key", "access_key", "secret", "secret_key"},
    "aws_s3": {"key", "access_key", "secret", "secret_key"},
    "aws_eventbridge": {"access_key_id", "secret_access_key"},
    "gcp_pubsub": {"service_account_json", "credentials_json"},
    "rabbitmq": {"username", "password"},
    "azure_servicebus": {"connection_string"},
    "hookdeck": {"token", "api_key"},
    "kafka": {"username", "password"},
}

AWS_KEY = {"key": "AKIAIOSFODNN7EXAMPLE", "secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
# One valid configuration object per type, for the spec and the code to agree on.
SAMPLE_CONFIGS: dict[str, dict[str, Any]] = {
    "webhook": {"url": "https://example.com/hook", "custom_headers": {"X-Team": "billing"}},
    "aws_sqs": {"queue_url": "https://sqs.us-east-1.amazonaws.com/123456789012/q", **AWS_KEY},
    "aws_kinesis": {
        "stream_name": "events",
        "region": "eu-west-1",
        "partition_key": "p",
        **AWS_KEY,
    },
    "aws_s3": {"bucket": "herald-events", "region": "eu-west-1", "prefix": "herald", **AWS_KEY},
    "aws_eventbridge": {
        "event_bus_name": "default",
        "region": "us-east-1",
        "access_key_id": AWS_KEY["key"],
        "secret_access_key": AWS_KEY["secret"],
    },
    "gcp_pubsub": {
        "project_id": "herald-test",
        "topic": "events",
        "service_account_json": '{"type": "service_account", "project_id": "herald-test"}',
    },
    "rabbitmq": {"exchange": "herald", "server_url": "amqp://herald:s3cret@rabbitmq:5672"},
    "azure_servicebus": {
        "name": "events",
        "connection_string": "Endpoint=sb://x.servicebus.windows.net/;"
        "SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0",
    },
    "hookdeck": {"api_key": base64.b64encode(b"src_herald:hookdeck-key").decode()},
    "kafka": {
        "bootstrap_servers": ["kafka-1:9092", "kafka-2:9092"],
        "topic": "events",
        "username": "herald",
        "password": "s3cret",
        "sasl_mechanism": "SCRAM-SHA-256",
    },
}


def resolve(node: Any) -> Any:
    """Follow local `$ref`s (`#/…`) to what they point at."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) for every operation in the spec."""
    for path, item in SPEC["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def validator(schema_name: str) -> Draft202012Validator:
    """A JSON Schema 2020-12 validator for one component schema, `$ref`s resolved."""
    uri = "urn:herald:openapi"
    registry: Registry[Any] = Registry().with_resource(uri, DRAFT202012.create_resource(SPEC))
    return Draft202012Validator(
        {"$ref": f"{uri}#/components/schemas/{schema_name}"}, registry=registry
    )


def assert_valid(schema_name: str, instance: Any) -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in validator(schema_name).iter_errors(instance)]
    assert not errors, f"{schema_name}: {errors}"


# -- the document -------------------------------------------------------------------------


def test_the_spec_is_valid_openapi_3_1() -> None:
    assert SPEC["openapi"].startswith("3.1.")
    validate(SPEC)


def test_build_spec_returns_a_copy_the_caller_may_change() -> None:
    build_spec()["paths"].clear()
    assert build_spec()["paths"] == SPEC["paths"]


# -- every route and every contract endpoint ------------------------------------------------


def _route_modules() -> dict[str, web.RouteTableDef]:
    tables = {}
    for info in pkgutil.iter_modules(api.routes.__path__, "api.routes."):
        table = getattr(importlib.import_module(info.name), "routes", None)
        if isinstance(table, web.RouteTableDef):
            tables[info.name] = table
    return tables


ROUTE_TABLES = _route_modules()


def _plain(path: str) -> str:
    """`/x/{id:[0-9]+}` → `/x/{id}`: the spec's spelling of a path."""
    return re.sub(r"\{([^}:]+)(:[^}]*)?\}", r"{\1}", path)


def test_the_route_tables_checked_include_destinations_and_events() -> None:
    assert {"api.routes.destinations", "api.routes.events", "api.routes.docs"} <= set(ROUTE_TABLES)


@pytest.mark.parametrize("module", sorted(ROUTE_TABLES))
def test_every_route_is_in_the_spec_with_its_method(module: str) -> None:
    routes = [r for r in ROUTE_TABLES[module] if isinstance(r, web.RouteDef)]
    assert routes
    for route in routes:
        path = _plain(route.path)
        assert path in SPEC["paths"], f"{route.method} {route.path} ({module}) is not in the spec"
        assert route.method.lower() in SPEC["paths"][path], f"{route.method} {path} is missing"


def test_health_routes_are_in_the_spec() -> None:
    for route in health_routes({}):
        assert route.method.lower() in SPEC["paths"][route.path]


# The static pages and their files, public (api.app.STATIC_PATHS): the customer portal's
# (api/routes/portal.py) and Swagger UI's (api/routes/docs.py; its redirect is in PUBLIC_PATHS).
STATIC_PATHS = {"/portal", "/portal/", "/portal/{file}", "/docs/", "/docs/{file}"}


def test_every_endpoint_of_the_contract_is_in_the_spec() -> None:
    item = "/v2/event-destinations/{destination_id}"
    expected = {
        ("post", "/v2/event-destinations"),
        ("get", "/v2/event-destinations"),
        ("get", item),
        ("patch", item),
        ("delete", item),
        *(("post", f"{item}/{action}") for action in ("enable", "disable", "test")),
        ("post", f"{item}/rotate-secret"),
        ("get", f"{item}/event-deliveries"),
        ("post", f"{item}/recover"),  # issue 16: recovering after an outage
        ("get", f"{item}/recoveries/{{recovery_id}}"),
        ("post", "/v2/events"),
        ("post", "/v2/events/batch"),
        ("get", "/v2/events"),
        ("get", "/v2/events/{event_id}"),
        ("post", "/v2/events/{event_id}/replay"),
        ("get", "/v2/event-deliveries/{delivery_id}"),
        ("post", "/v2/event-deliveries/{delivery_id}/retry"),
        *(("get", path) for path in PUBLIC_PATHS),
        *(("get", path) for path in STATIC_PATHS),
    }
    tenant = "/v2/tenants/{tenant_id}"
    expected |= {  # issue 15: the tenants API
        ("post", "/v2/tenants"),
        ("get", "/v2/tenants"),
        ("get", tenant),
        ("patch", tenant),
        ("delete", tenant),
        ("post", f"{tenant}/api-keys"),
        ("get", f"{tenant}/api-keys"),
        ("delete", f"{tenant}/api-keys/{{key_id}}"),
        ("post", f"{tenant}/portal-sessions"),
    }
    expected |= {("get", "/v2/stats"), ("get", f"{item}/stats")}  # issue 18: statistics
    assert {(method, path) for path, method, _ in operations()} == expected


def test_list_filters_of_the_contract() -> None:
    def names(path: str) -> set[str]:
        item = SPEC["paths"][path]
        params = [resolve(p) for p in (*item.get("parameters", ()), *item["get"]["parameters"])]
        return {p["name"] for p in params if p["in"] == "query"}

    page = {"limit", "cursor"}
    # indexed_after: the ingestion-order cursor for pollers (issue 12, D22).
    times = {"created_after", "created_before", "indexed_after"}
    assert names("/v2/event-destinations") == page
    assert names("/v2/events") == page | times | {"type"}
    deliveries = "/v2/event-destinations/{destination_id}/event-deliveries"
    assert names(deliveries) == page | times | {"status", "event_type"}


# -- security, headers and errors ------------------------------------------------------------


def test_only_the_public_paths_need_no_key() -> None:
    assert SPEC["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"
    assert SPEC["security"] == [{"BearerAuth": []}]
    public = {path for path, _, op in operations() if op.get("security") == []}
    assert public == set(PUBLIC_PATHS) | STATIC_PATHS


def test_every_post_takes_an_idempotency_key() -> None:
    for path, method, op in operations():
        if method == "post":
            names = {resolve(p)["name"] for p in op.get("parameters", ())}
            assert "Idempotency-Key" in names, path


def test_every_response_carries_the_request_id_header() -> None:
    for path, method, op in operations():
        for status, response in op["responses"].items():
            assert "Request-Id" in resolve(response).get("headers", {}), (method, path, status)


def _error_schema(response: Any) -> str:
    ref: str = resolve(response)["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[-1]


def test_every_api_operation_documents_its_errors() -> None:
    for path, method, op in operations():
        if not path.startswith("/v2/"):
            continue
        codes = set(op["responses"])
        expected = {"401", "403", "429", "500", "503"}
        if method == "post":
            expected |= {"400", "409"}  # a malformed or reused Idempotency-Key
        if "requestBody" in op:
            expected |= {"400", "413"}
        if any(resolve(p)["in"] == "query" for p in op.get("parameters", ())):
            expected.add("400")
        if "{" in path:
            expected.add("404")
        assert expected <= codes, f"{method} {path} lacks {sorted(expected - codes)}"
        for code in codes - {c for c in codes if c.startswith("2")}:
            wanted = "ValidationErrorResponse" if code == "400" else "ErrorResponse"
            assert _error_schema(op["responses"][code]) == wanted, (method, path, code)


def test_error_bodies_of_the_code_match_the_spec() -> None:
    for response in (
        ApiError(404, "resource_missing", "No such event.").response("req_1"),
        ApiError(409, "idempotency_error", "Reused.", field="Idempotency-Key").response("req_1"),
    ):
        assert isinstance(response.body, bytes)
        assert_valid("ErrorResponse", orjson.loads(response.body))
    invalid = RequestValidationError({"webhook.url": ["is required."]}).response("req_1")
    assert isinstance(invalid.body, bytes)
    assert_valid("ValidationErrorResponse", orjson.loads(invalid.body))


# -- destination types, aliases and credentials --------------------------------------------


def test_every_known_type_has_a_config_schema() -> None:
    assert set(CREATE["properties"]["type"]["enum"]) == set(validation.KNOWN_TYPES)
    assert set(RESPONSE["properties"]["type"]["enum"]) == set(validation.KNOWN_TYPES)
    update = SCHEMAS["UpdateEventDestinationRequest"]["properties"]
    for destination_type in validation.KNOWN_TYPES:
        assert CREATE["properties"][destination_type]["type"] == "object"
        assert resolve(update[destination_type]) == CREATE["properties"][destination_type]
        assert RESPONSE["properties"][destination_type]["type"] == "object"


@pytest.mark.parametrize("destination_type", sorted(REFERENCE_REQUEST))
def test_create_request_keeps_the_reference_fields(destination_type: str) -> None:
    required, properties = REFERENCE_REQUEST[destination_type]
    config = CREATE["properties"][destination_type]
    assert config.get("required", []) == required
    assert properties <= set(config["properties"])


@pytest.mark.parametrize("destination_type", sorted(ALIASES))
def test_create_request_lists_every_alias_of_the_contract(destination_type: str) -> None:
    properties = CREATE["properties"][destination_type]["properties"]
    for canonical, alias in ALIASES[destination_type].items():
        assert canonical in properties
        assert alias in properties, f"{destination_type}.{alias}"
        assert f"`{alias}`" in properties[canonical]["description"]
        assert properties[alias].get("writeOnly") == properties[canonical].get("writeOnly")
    if destination_type == "aws_eventbridge":
        assert not {"key", "secret", "access_key", "secret_key"} & set(properties)


@pytest.mark.parametrize("destination_type", sorted(CREDENTIALS))
def test_credentials_are_write_only_and_never_in_a_response(destination_type: str) -> None:
    request = CREATE["properties"][destination_type]["properties"]
    returned = set(RESPONSE["properties"][destination_type]["properties"])
    for field in CREDENTIALS[destination_type]:
        assert request[field].get("writeOnly") is True, f"{destination_type}.{field}"
    if destination_type == "webhook":
        returned.discard("secret")  # a generated secret, shown once by the call that made it
    assert not CREDENTIALS[destination_type] & returned


def test_the_contract_examples_are_valid_requests() -> None:
    assert_valid(
        "CreateEventDestinationRequest",
        {
            "name": "Production Webhook",
            "type": "webhook",
            "webhook": {"url": "https://your-app.com/webhooks/deck"},
            "events": ["credential.verified", "task_run.completed", "task_run.failed"],
        },
    )
    assert_valid("PublishEventRequest", {"type": "task_run.completed", "data": {"id": "t"}})
    bad = {"name": "x", "webhook": {"url": "https://x.test"}, "events": [], "colour": "red"}
    assert len(list(validator("CreateEventDestinationRequest").iter_errors(bad))) == 2


@pytest.mark.parametrize(
    "pattern",
    ["*", "task_run.*", "a.b", "a.b_2.c", "a.b.*", "a", "A.b", "*.b", "a.*.b", "a..b", ""],
)
def test_event_patterns_of_the_spec_are_those_the_code_accepts(pattern: str) -> None:
    item = CREATE["properties"]["events"]["items"]
    in_spec = re.search(item["pattern"], pattern) is not None
    assert in_spec == (validation.event_patterns(FieldErrors(), [pattern]) is not None)
    if "*" not in pattern:
        event_type = SCHEMAS["PublishEventRequest"]["properties"]["type"]["pattern"]
        in_spec = re.search(event_type, pattern) is not None
        assert in_spec == bool(validation.EVENT_TYPE.match(pattern))


@pytest.mark.parametrize("destination_type", validation.KNOWN_TYPES)
def test_spec_and_code_agree_on_each_type(destination_type: str) -> None:
    """A body the spec accepts is accepted by the code, and what is returned fits the spec."""
    body = {
        "name": "n",
        "type": destination_type,
        destination_type: SAMPLE_CONFIGS[destination_type],
        "events": ["task_run.*"],
    }
    assert_valid("CreateEventDestinationRequest", body)
    try:
        load_sink(destination_type)
    except ValueError:
        pytest.skip(f"no {destination_type} sink in this version yet")
    fields = validation.create_destination(body, Settings())
    now = "2026-01-01T00:00:00.000Z"
    record = {**fields, "status": "pending_verification", "created_at": now, "updated_at": now}
    shown = present({**record, "id": "evtd_1"}, "req_1")
    assert_valid("EventDestinationResponse", shown)
    assert not set(shown[destination_type]) & CREDENTIALS[destination_type]


def test_event_and_delivery_objects_of_the_code_match_the_spec() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    event = present_event({"id": "evt_1", "type": "a.b", "data": '{"k": 1}', "created_at": at})
    assert_valid("Event", event)
    delivery_row = {
        "id": "evdl_1",
        "event_id": "evt_1",
        "event_type": "a.b",
        "destination_id": "evtd_1",
        "status": "retrying",
        "attempts": 1,
        "last_attempt_at": at,
        "next_attempt_at": None,
        "created_at": at,
        "updated_at": at,
    }
    assert_valid("EventDelivery", present_delivery(delivery_row))
    attempt = present_attempt(
        {
            "id": "evat_1",
            "attempt": 0,
            "outcome": "failed",
            "response_status": 503,
            "latency_ms": 12.5,
            "error": "HTTP 503",
            "response_body": "busy",
            "created_at": at,
        }
    )
    assert_valid("EventDeliveryAttempt", attempt)
    assert_valid(
        "EventDeliveryWithAttempts", {**present_delivery(delivery_row), "attempts": [attempt]}
    )


# -- serving -------------------------------------------------------------------------------


@pytest.fixture
def swagger_ui(tmp_path: Path) -> Iterator[Path]:
    """Stand-ins for the swagger-ui-dist files scripts/setup.sh unpacks, in a folder of their
    own (so the unit tests need no set-up), and docs' cache emptied afterwards."""
    for name in docs.SWAGGER_UI_FILES:
        (tmp_path / name).write_text(f"/* {name} */")
    (tmp_path / "index.html").write_text("swagger-ui-dist's own page, not served")
    yield tmp_path
    docs.docs_files.cache_clear()


async def test_openapi_json_and_docs_are_served(
    aiohttp_client: AiohttpClient, swagger_ui: Path
) -> None:
    app = web.Application()
    app[SETTINGS] = Settings(swagger_ui_dir=swagger_ui)
    app.add_routes(docs.routes)
    client = await aiohttp_client(app)

    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == SPEC

    response = await client.get("/docs", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (301, "/docs/")

    response = await client.get("/docs/")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert "swagger-ui-bundle.js" in page
    assert "http://" not in page and "https://" not in page  # nothing from elsewhere
    assert not re.search(r"<script>|<style|\bon\w+=", page)  # no inline code: the CSP holds
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self';" in policy
    assert "connect-src 'self';" in policy

    referenced = re.findall(r'(?:src|href)="([^"./][^"]*)"', page)
    assert set(referenced) == {"swagger-ui.css", "swagger-ui-bundle.js", "init.js"}
    for name in referenced:
        response = await client.get(f"/docs/{name}")
        assert response.status == 200, name
        assert response.headers["Content-Security-Policy"] == policy
    assert await (await client.get("/docs/swagger-ui.css")).text() == "/* swagger-ui.css */"
    assert '"/openapi.json"' in await (await client.get("/docs/init.js")).text()
    assert (await client.get("/docs/package.json")).status == 404


def test_docs_without_swagger_ui_says_which_command_installs_it(swagger_ui: Path) -> None:
    (swagger_ui / "swagger-ui.css").unlink()
    with pytest.raises(ApiError) as raised:
        docs.docs_files(swagger_ui)
    assert raised.value.status == 503
    assert "make setup" in str(raised.value)
    assert str(swagger_ui) not in str(raised.value)  # no server path in a public answer

    (swagger_ui / "swagger-ui.css").write_text("")  # installed later: no restart needed
    assert "swagger-ui.css" in docs.docs_files(swagger_ui)


def test_the_image_and_set_up_fetch_the_same_swagger_ui() -> None:
    root = Path(__file__).resolve().parents[2]
    setup = re.search(r"^SWAGGER_UI_VERSION=(\S+)$", (root / "scripts/setup.sh").read_text(), re.M)
    image = re.search(r"^ARG SWAGGER_UI_VERSION=(\S+)$", (root / "Dockerfile").read_text(), re.M)
    assert setup and image and setup.group(1) == image.group(1)
