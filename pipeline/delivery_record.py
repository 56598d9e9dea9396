"""The delivery record on the wire: a small JSON head, then the request body as sent.

Written by the router (and the API's manual retry), read by the delivery runner, written
again by the runner to a retry tier or the DLQ, and read by the indexer. The body is the
event envelope, encoded once by the router: the runner hands these exact bytes to the sink
(and signs over them) without parsing them, and a retry carries them on unchanged.

    value = VERSION (1 byte) | head length (4 bytes, big-endian) | head (JSON) | body

The head holds everything but the body: `id`, `tenant`, `destination_id`,
`destination_generation`, `attempt`, `due_at`, `routed_at`, the event's `id`, `type` and
`created_at` under `event`, `ordering_key` if the event has one, and the flags a retry or
dead letter adds. Records written before this format are one JSON object (the event whole
under `event`); they still decode, so records in flight across an upgrade are delivered. A
JSON value starts with `{`, never with VERSION.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

VERSION = b"\x01"
HEAD_LENGTH_BYTES = 4
BODY = "body"  # the key under which `decode` returns the body beside the head's fields
EVENT_HEAD_KEYS = ("id", "type", "created_at")
# The head field of the event's publisher-set ordering key (absent: the event has none).
ORDERING_KEY = "ordering_key"


def frame(head: Mapping[str, Any], body: bytes) -> bytes:
    """A record of `head` (JSON-serializable, without BODY) and the request body."""
    encoded = orjson.dumps(head)
    return b"".join((VERSION, len(encoded).to_bytes(HEAD_LENGTH_BYTES, "big"), encoded, body))


def encode(delivery: Mapping[str, Any]) -> bytes:
    """A decoded delivery (its head's fields and BODY), framed again: for a retry tier or
    the DLQ, with whatever the runner changed in the head and the same body."""
    head = {k: v for k, v in delivery.items() if k != BODY}
    return frame(head, delivery[BODY])


def decode(value: bytes) -> dict[str, Any]:
    """The head's fields and, under BODY, the body's bytes. Raises ValueError (or an
    orjson.JSONDecodeError, a ValueError) for a record that is neither format."""
    if value[:1] == VERSION:
        head, start = _head(value)
        head[BODY] = value[start:]
        return head
    record = _legacy(value)
    event = record["event"]
    record[BODY] = orjson.dumps(event)
    record["event"] = {k: event[k] for k in EVENT_HEAD_KEYS if k in event}
    return record


def head(value: bytes) -> dict[str, Any]:
    """The head's fields alone (the body is not copied): what the indexer reads."""
    if value[:1] == VERSION:
        return _head(value)[0]
    return _legacy(value)


def _head(value: bytes) -> tuple[dict[str, Any], int]:
    start = 1 + HEAD_LENGTH_BYTES
    end = start + int.from_bytes(value[1:start], "big")
    if len(value) < end:
        raise ValueError("delivery record shorter than its head")
    head = orjson.loads(value[start:end])
    if not isinstance(head, dict):
        raise ValueError("delivery record head is not an object")
    return head, end


def _legacy(value: bytes) -> dict[str, Any]:
    record = orjson.loads(value)
    if not isinstance(record, dict) or not isinstance(record.get("event"), dict):
        raise ValueError("not a delivery record")
    return record
