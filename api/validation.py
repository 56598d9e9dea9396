"""Request validation for destinations and events: every failing field, by dotted path.

Each destination type's config object is validated by its sink (pipeline/sinks/<type>.py);
this module checks the fields every destination has and raises RequestValidationError.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

from api.errors import RequestValidationError
from pipeline import filters, ids
from pipeline.operator_events import reserved_tenant
from pipeline.settings import Settings
from pipeline.sinks import load_sink
from pipeline.sinks.fields import FieldErrors, string_map

EVENT_TYPE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
EVENT_PATTERN = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*\.\*$")
DESTINATION_ID = re.compile(r"^evtd_[A-Za-z0-9_-]{1,64}$")
EVENT_ID = re.compile(r"^evt_[A-Za-z0-9_-]{1,64}$")
TENANT_ID = re.compile(ids.TENANT_ID_PATTERN)
MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_METADATA_KEYS = 50
MAX_EVENTS = 200
MAX_EVENT_TYPE = 200

KNOWN_TYPES = (
    "webhook", "aws_sqs", "aws_kinesis", "aws_s3", "aws_eventbridge", "gcp_pubsub",
    "rabbitmq", "azure_servicebus", "hookdeck", "kafka",
)  # fmt: skip
COMMON_FIELDS = {
    "name", "description", "type", "events", "metadata", "rate_limit", "filter", "ordering",
}  # fmt: skip
# A destination's `ordering`: "per_key" delivers the events of one `ordering_key` in publish
# order (pipeline/ordering.py); "none" (the default) delivers every event in parallel.
ORDERINGS = ("none", "per_key")
MAX_ORDERING_KEY_BYTES = 256


def _raise_if_any(errors: FieldErrors) -> None:
    if errors:
        raise RequestValidationError(errors.by_field)


def tenant_id(errors: FieldErrors, value: Any, path: str) -> str | None:
    """A tenant id a caller may give: 1 to 64 of A-Z a-z 0-9 _ -, and not the tenant
    operator events belong to (pipeline/operator_events.py), which no caller may name."""
    if not isinstance(value, str) or not TENANT_ID.fullmatch(value):
        errors.add(path, "must be 1 to 64 of A-Z a-z 0-9 _ -.")
        return None
    if reserved_tenant(value):
        errors.add(path, f"'{value}' is reserved for Herald's operator events.")
        return None
    return value


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestValidationError({"body": ["must be a JSON object."]})
    return body


def _text(
    errors: FieldErrors, body: dict[str, Any], field: str, *, required: bool, max_length: int
) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            errors.add(field, "is required.")
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        errors.add(field, "must be a non-empty string." if required else "must be a string.")
        return None
    if len(value) > max_length:
        errors.add(field, f"must be at most {max_length} characters.")
        return None
    return value


def event_patterns(errors: FieldErrors, value: Any, path: str = "events") -> list[str] | None:
    """A non-empty list: `["*"]`, exact types (`object.action`) or prefixes (`task_run.*`)."""
    if value is None:
        errors.add(path, 'is required: a non-empty list of event types, or ["*"].')
        return None
    if not isinstance(value, list) or not value:
        errors.add(path, 'must be a non-empty list of event types, or ["*"].')
        return None
    if len(value) > MAX_EVENTS:
        errors.add(path, f"must list at most {MAX_EVENTS} event types.")
        return None
    ok = True
    for i, item in enumerate(value):
        if (
            not isinstance(item, str)
            or len(item) > MAX_EVENT_TYPE
            or not (item == "*" or EVENT_TYPE.match(item) or EVENT_PATTERN.match(item))
        ):
            errors.add(
                f"{path}[{i}]",
                "must be an event type like 'task_run.completed', "
                "a prefix like 'task_run.*', or '*'.",
            )
            ok = False
    if "*" in value and len(value) > 1:
        errors.add(path, "'*' subscribes to every event and cannot be combined with other types.")
        ok = False
    return list(dict.fromkeys(value)) if ok else None


def _metadata(errors: FieldErrors, value: Any) -> dict[str, str] | None:
    meta = string_map(errors, value, "metadata", max_keys=MAX_METADATA_KEYS, max_value=500)
    if meta and any(len(k) > 40 for k in meta):
        errors.add("metadata", "keys must be at most 40 characters.")
    return meta


def _rate_limit(errors: FieldErrors, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        errors.add("rate_limit", "must be an integer number of deliveries per second, 1 to 100000.")
        return None
    return value


def _filter(errors: FieldErrors, value: Any) -> dict[str, Any] | None:
    """A content filter (pipeline/filters.py), or None: none given, or null to remove it."""
    if value is None:
        return None
    found = filters.problems(value)
    for path, message in found:
        errors.add(path, message)
    return None if found else value


def _ordering(errors: FieldErrors, value: Any) -> str:
    """The destination's ordering; omitted or null: "none"."""
    if value is None:
        return "none"
    if value not in ORDERINGS:
        errors.add("ordering", f"must be one of: {', '.join(ORDERINGS)}.")
        return "none"
    return str(value)


Check = Callable[[FieldErrors, dict[str, Any]], Any]
COMMON_CHECKS: dict[str, Check] = {
    "name": lambda e, b: _text(e, b, "name", required=True, max_length=MAX_NAME),
    "description": lambda e, b: _text(
        e, b, "description", required=False, max_length=MAX_DESCRIPTION
    ),
    "events": lambda e, b: event_patterns(e, b.get("events")),
    "metadata": lambda e, b: _metadata(e, b.get("metadata")) or {},
    "rate_limit": lambda e, b: _rate_limit(e, b.get("rate_limit")),
    "filter": lambda e, b: _filter(e, b.get("filter")),
    "ordering": lambda e, b: _ordering(e, b.get("ordering")),
}


def _destination_type(errors: FieldErrors, value: Any) -> str | None:
    if value not in KNOWN_TYPES:
        errors.add("type", f"must be one of: {', '.join(KNOWN_TYPES)}.")
        return None
    try:
        load_sink(value)
    except ValueError:
        errors.add("type", f"'{value}' destinations are not available in this version yet.")
        return None
    return str(value)


def _type_config(
    errors: FieldErrors, body: dict[str, Any], destination_type: str | None, settings: Settings
) -> tuple[dict[str, Any], dict[str, Any]]:
    for other in KNOWN_TYPES:
        if other != destination_type and other in body:
            errors.add(other, f"is not allowed when type is '{destination_type}'.")
    if destination_type is None:
        return {}, {}
    config, credentials = load_sink(destination_type).validate(
        body.get(destination_type), errors, destination_type, settings
    )
    if settings.https_only:
        _refuse_plain_http(errors, config, destination_type)
    return config, credentials


def _refuse_plain_http(errors: FieldErrors, config: dict[str, Any], path: str) -> None:
    """With https_only, every http URL in a type's config (webhook.url, …) is an error."""
    for name, value in config.items():
        if isinstance(value, str) and value[:7].lower() == "http://":
            errors.add(
                f"{path}.{name}", "must be an https URL: this Herald delivers only over https."
            )


def create_destination(body: Any, settings: Settings) -> dict[str, Any]:
    """The validated fields of a create request; raises RequestValidationError."""
    body = _object(body)
    errors = FieldErrors()
    for unknown in sorted(set(body) - COMMON_FIELDS - {"id", *KNOWN_TYPES}):
        errors.add(unknown, "is not a known field.")
    client_id = body.get("id")
    if client_id is not None and (
        not isinstance(client_id, str) or not DESTINATION_ID.match(client_id)
    ):
        errors.add("id", "must be 'evtd_' followed by 1 to 64 of A-Z a-z 0-9 _ -.")
    destination_type = _destination_type(errors, body.get("type", "webhook"))
    fields = {name: check(errors, body) for name, check in COMMON_CHECKS.items()}
    fields.update(id=client_id, type=destination_type)
    fields["config"], fields["credentials"] = _type_config(errors, body, destination_type, settings)
    _raise_if_any(errors)
    return fields


def update_destination(body: Any, current_type: str, settings: Settings) -> dict[str, Any]:
    """The fields a PATCH changes (only those given); the same rules as create.

    Changing `type` needs the new type's config object; that case is a 422, raised by the
    caller, because the request is well-formed but unusable.
    """
    body = _object(body)
    errors = FieldErrors()
    for unknown in sorted(set(body) - COMMON_FIELDS - set(KNOWN_TYPES)):
        errors.add(unknown, "is not a known field.")
    changes = {name: check(errors, body) for name, check in COMMON_CHECKS.items() if name in body}
    new_type = current_type
    if "type" in body:
        new_type = _destination_type(errors, body["type"]) or current_type
        changes["type"] = new_type
    if new_type in body:
        changes["config"], changes["credentials"] = _type_config(errors, body, new_type, settings)
    else:
        for other in KNOWN_TYPES:
            if other in body:
                errors.add(other, f"is not allowed when type is '{new_type}'.")
    _raise_if_any(errors)
    return changes


PUBLISH_FIELDS = frozenset({"type", "data", "id", "ordering_key"})


def publish_event(body: Any) -> dict[str, Any]:
    """`{type, data, id?, ordering_key?}` of a publish request, plus `data_json` (`data`
    encoded once, for its size and the record); raises RequestValidationError."""
    body = _object(body)
    errors = FieldErrors()
    if not body.keys() <= PUBLISH_FIELDS:
        for unknown in sorted(set(body) - PUBLISH_FIELDS):
            errors.add(unknown, "is not a known field.")
    event_type = body.get("type")
    if (
        not isinstance(event_type, str)
        or len(event_type) > MAX_EVENT_TYPE
        or not EVENT_TYPE.match(event_type)
    ):
        errors.add(
            "type",
            "is required: an event type like 'task_run.completed' (lowercase object.action).",
        )
    data = body.get("data")
    data_json = _event_data(errors, data)
    event_id = body.get("id")
    if event_id is not None and (not isinstance(event_id, str) or not EVENT_ID.match(event_id)):
        errors.add("id", "must be 'evt_' followed by 1 to 64 of A-Z a-z 0-9 _ -.")
    ordering_key = _ordering_key(errors, body.get("ordering_key"))
    _raise_if_any(errors)
    return {
        "type": event_type,
        "data": data,
        "id": event_id,
        "data_json": data_json,
        "ordering_key": ordering_key,
    }


def _ordering_key(errors: FieldErrors, value: Any) -> str | None:
    """The publisher's ordering key: 1 to MAX_ORDERING_KEY_BYTES bytes of UTF-8, no control
    characters (it is a Kafka partitioning key, an index column and a log field)."""
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not value
        or not value.isprintable()  # a lone surrogate is not printable: encode cannot fail
        or len(value.encode()) > MAX_ORDERING_KEY_BYTES
    ):
        errors.add(
            "ordering_key",
            f"must be a string of 1 to {MAX_ORDERING_KEY_BYTES} bytes (UTF-8) "
            "without control characters.",
        )
        return None
    return value


def _event_data(errors: FieldErrors, data: Any) -> bytes:
    """`data` encoded, or b"" with its error added."""
    if not isinstance(data, dict):
        errors.add("data", "is required and must be a JSON object.")
        return b""
    try:
        encoded = orjson.dumps(data)
    except orjson.JSONEncodeError:  # parsed, but nested deeper than orjson writes
        errors.add("data", "is nested too deeply.")
        return b""
    # orjson writes U+0000 as the escape \u0000, so without that text there is none; with
    # it (perhaps an escaped backslash before "u0000") the values tell.
    if b"\\u0000" in encoded and _has_nul(data):
        # PostgreSQL (the event log) cannot store it, and receivers' parsers often choke.
        errors.add("data", "must not contain the NUL character (\\u0000) in any string.")
    return encoded


def _has_nul(value: Any) -> bool:
    """True if any string (key or value) anywhere in a JSON value holds U+0000."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False
