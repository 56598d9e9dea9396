"""Request validation for destinations and events: every failing field, by dotted path."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import urlsplit

from api.errors import RequestValidationError
from pipeline.signing import SECRET_PREFIX

EVENT_TYPE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
EVENT_PATTERN = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*\.\*$")
DESTINATION_ID = re.compile(r"^evtd_[A-Za-z0-9_-]{1,64}$")
EVENT_ID = re.compile(r"^evt_[A-Za-z0-9_-]{1,64}$")
MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_METADATA_KEYS = 50
MAX_EVENTS = 200

# Types whose sinks exist; the others are answered with a clear 400 until they do.
SUPPORTED_TYPES = ("webhook",)
KNOWN_TYPES = (
    "webhook",
    "aws_sqs",
    "aws_kinesis",
    "aws_s3",
    "aws_eventbridge",
    "gcp_pubsub",
    "rabbitmq",
    "azure_servicebus",
    "hookdeck",
    "kafka",
)
CREATE_FIELDS = {
    "id",
    "name",
    "description",
    "type",
    "events",
    "metadata",
    "rate_limit",
    *KNOWN_TYPES,
}


class Errors:
    """Collects messages per field; raises them together."""

    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.by_field.setdefault(field, []).append(message)

    def raise_if_any(self) -> None:
        if self.by_field:
            raise RequestValidationError(self.by_field)


def _string(
    errors: Errors,
    body: dict[str, Any],
    field: str,
    *,
    required: bool,
    max_length: int,
    path: str | None = None,
) -> str | None:
    path = path or field
    value = body.get(field)
    if value is None:
        if required:
            errors.add(path, "is required.")
        return None
    if not isinstance(value, str):
        errors.add(path, "must be a string.")
        return None
    if required and not value.strip():
        errors.add(path, "must not be empty.")
    if len(value) > max_length:
        errors.add(path, f"must be at most {max_length} characters.")
    return value


def http_url(errors: Errors, value: Any, path: str) -> str | None:
    """An absolute http(s) URL with a host."""
    if not isinstance(value, str) or not value:
        errors.add(
            path, "is required and must be a string." if value is None else "must be a string."
        )
        return None
    if len(value) > 2048:
        errors.add(path, "must be at most 2048 characters.")
        return None
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        parts, port_ok = None, False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        errors.add(path, "must be an absolute http or https URL.")
        return None
    return value


def webhook_secret(errors: Errors, value: Any, path: str) -> str | None:
    """whsec_ + base64 (standard or URL-safe) of 16 to 64 bytes."""
    if not isinstance(value, str) or not value.startswith(SECRET_PREFIX):
        errors.add(path, f"must be '{SECRET_PREFIX}' followed by base64 of 16 to 64 bytes.")
        return None
    encoded = value.removeprefix(SECRET_PREFIX)
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        raw = (
            base64.urlsafe_b64decode(padded)
            if ("-" in encoded or "_" in encoded)
            else base64.b64decode(padded, validate=True)
        )
    except (binascii.Error, ValueError):
        raw = b""
    if not 16 <= len(raw) <= 64:
        errors.add(path, f"must be '{SECRET_PREFIX}' followed by base64 of 16 to 64 bytes.")
        return None
    return value


def event_patterns(errors: Errors, value: Any, path: str = "events") -> list[str] | None:
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
        if not isinstance(item, str) or not (
            item == "*" or EVENT_TYPE.match(item) or EVENT_PATTERN.match(item)
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


def metadata(errors: Errors, value: Any, path: str = "metadata") -> dict[str, str] | None:
    """A string → string map of at most 50 keys."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        errors.add(path, "must be an object of string keys to string values.")
        return None
    if len(value) > MAX_METADATA_KEYS:
        errors.add(path, f"must have at most {MAX_METADATA_KEYS} keys.")
        return None
    if any(len(k) > 40 or len(v) > 500 for k, v in value.items()):
        errors.add(path, "keys must be at most 40 and values at most 500 characters.")
        return None
    return value


def webhook_config(errors: Errors, value: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(public config, credentials) of a webhook object."""
    if not isinstance(value, dict):
        errors.add("webhook", "is required for type 'webhook' and must be an object.")
        return {}, {}
    for unknown in sorted(set(value) - {"url", "secret", "custom_headers"}):
        errors.add(f"webhook.{unknown}", "is not a known field.")
    config: dict[str, Any] = {"url": http_url(errors, value.get("url"), "webhook.url")}
    headers = value.get("custom_headers")
    if headers is not None:
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            errors.add("webhook.custom_headers", "must be an object of string values.")
        else:
            config["custom_headers"] = headers
    credentials: dict[str, Any] = {}
    if value.get("secret") is not None:
        credentials["secret"] = webhook_secret(errors, value["secret"], "webhook.secret")
    return config, credentials


def create_destination(body: Any) -> dict[str, Any]:
    """The validated fields of a create request; raises RequestValidationError."""
    errors = Errors()
    if not isinstance(body, dict):
        errors.add("body", "must be a JSON object.")
        errors.raise_if_any()
    for unknown in sorted(set(body) - CREATE_FIELDS):
        errors.add(unknown, "is not a known field.")
    name = _string(errors, body, "name", required=True, max_length=MAX_NAME)
    description = _string(errors, body, "description", required=False, max_length=MAX_DESCRIPTION)
    destination_type = body.get("type", "webhook")
    if destination_type not in KNOWN_TYPES:
        errors.add("type", f"must be one of: {', '.join(KNOWN_TYPES)}.")
    elif destination_type not in SUPPORTED_TYPES:
        errors.add("type", f"'{destination_type}' destinations are not available yet.")
    for other in KNOWN_TYPES:
        if other != destination_type and other in body:
            errors.add(other, f"is not allowed when type is '{destination_type}'.")
    client_id = body.get("id")
    if client_id is not None and (
        not isinstance(client_id, str) or not DESTINATION_ID.match(client_id)
    ):
        errors.add("id", "must be 'evtd_' followed by 1 to 64 of A-Z a-z 0-9 _ -.")
    events = event_patterns(errors, body.get("events"))
    meta = metadata(errors, body.get("metadata"))
    config: dict[str, Any] = {}
    credentials: dict[str, Any] = {}
    if destination_type == "webhook":
        config, credentials = webhook_config(errors, body.get("webhook"))
    errors.raise_if_any()
    return {
        "id": client_id,
        "name": name,
        "description": description,
        "type": destination_type,
        "events": events,
        "metadata": meta or {},
        "config": config,
        "credentials": credentials,
    }


def publish_event(body: Any, max_id: int = 64) -> dict[str, Any]:
    """`{type, data, id?}` of a publish request; raises RequestValidationError."""
    errors = Errors()
    if not isinstance(body, dict):
        errors.add("body", "must be a JSON object.")
        errors.raise_if_any()
    for unknown in sorted(set(body) - {"type", "data", "id"}):
        errors.add(unknown, "is not a known field.")
    event_type = body.get("type")
    if not isinstance(event_type, str) or not EVENT_TYPE.match(event_type) or len(event_type) > 200:
        errors.add(
            "type",
            "is required: an event type like 'task_run.completed' (lowercase object.action).",
        )
    data = body.get("data")
    if not isinstance(data, dict):
        errors.add("data", "is required and must be a JSON object.")
    event_id = body.get("id")
    if event_id is not None and (not isinstance(event_id, str) or not EVENT_ID.match(event_id)):
        errors.add("id", f"must be 'evt_' followed by 1 to {max_id} of A-Z a-z 0-9 _ -.")
    errors.raise_if_any()
    return {"type": event_type, "data": data, "id": event_id}
