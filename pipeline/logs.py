"""JSON-lines logging for every Herald process, Faust's worker included.

One JSON object per line on stderr: `timestamp` (UTC, ISO 8601), `level`, `logger`,
`message`, `service` (api, worker, …), and the context a call passed with `extra=` when
present: event_id, destination_id, delivery_id, attempt, tier, outcome, request_id, topic,
offset, counts (the delivery summary's). Only those names are copied from a record: an
`extra=` field that is not on the list never reaches the output, so a credential passed by
mistake is not printed either.
"""

from __future__ import annotations

import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

import orjson

CONTEXT_FIELDS = (
    "event_id",
    "destination_id",
    "delivery_id",
    "attempt",
    "tier",
    "outcome",
    "request_id",
    "topic",
    "offset",
    "counts",
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (tracebacks included, as a string field)."""

    def __init__(self, service: str = "herald") -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON object, without a trailing newline."""
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self._service,
        }
        fields = record.__dict__
        for name in CONTEXT_FIELDS:
            value = fields.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(level: str | int, service: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict: JSON lines on stderr at `level`.

    Also handed to Faust's worker (`faust.Worker(logging_config=…)`), which applies it in
    place of its own colored format when it starts.
    """
    return {
        "version": 1,
        # Module loggers (`log = logging.getLogger(__name__)`) exist before this runs.
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "service": service}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                # Resolved now: Faust later points sys.stderr at the logging system itself.
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        # The Kafka clients narrate every connection at INFO; their warnings are enough.
        "loggers": {name: {"level": "WARNING"} for name in ("kafka", "aiokafka")},
    }


def configure(level: str | int, service: str) -> None:
    """Send every log record of this process to stderr as JSON lines."""
    logging.config.dictConfig(logging_config(level, service))
