"""Validation of the HTTP headers a tenant adds to its webhook deliveries (`custom_headers`).

A header that reaches the wire unchecked can split the request (CR/LF), make the HTTP
client raise on every attempt (NUL, other control characters), or override what Herald
itself sets (the signature, the body's length and type, the connection's framing). So:

- a name is an RFC 9110 token (`!#$%&'*+-.^_`|~`, digits, letters), 1 to MAX_NAME chars;
- a value is visible ASCII, spaces and tabs (no CR, LF, NUL or other control character),
  at most MAX_VALUE chars, with no whitespace at either end (parsers strip it);
- the names Herald sets and the hop-by-hop ones are reserved, compared case-insensitively;
- at most MAX_HEADERS headers, no name twice (names are case-insensitive), and at most
  MAX_TOTAL characters of names and values together (receivers bound a request's head).

Every problem is reported under `<path>.<name>`, so the 400 names the offending header.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.sinks.fields import FieldErrors

MAX_HEADERS = 20
MAX_NAME = 128
MAX_VALUE = 4096
MAX_TOTAL = 8192

TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
VALUE = re.compile(r"[\x20-\x7e\t]*")

# What Herald or its HTTP client sets on every delivery, and the hop-by-hop headers that
# describe the connection rather than the message (RFC 9110 section 7.6.1).
RESERVED = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "host",
        "user-agent",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)
RESERVED_PREFIXES = ("webhook-", "proxy-")


def reserved(name: str) -> bool:
    """Whether Herald refuses to let a tenant set this header (case-insensitive)."""
    lowered = name.lower()
    return lowered in RESERVED or lowered.startswith(RESERVED_PREFIXES)


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a custom header name, or None."""
    if not 1 <= len(name) <= MAX_NAME or not TOKEN.fullmatch(name):
        return (
            f"is not a valid header name: 1 to {MAX_NAME} of A-Z a-z 0-9 and "
            "! # $ % & ' * + - . ^ _ ` | ~ (an RFC 9110 token)."
        )
    if reserved(name):
        return "is a header Herald sets itself or that describes the connection: reserved."
    return None


def value_problem(value: object) -> str | None:
    """Why `value` cannot be a custom header value, or None."""
    if not isinstance(value, str):
        return "must be a string."
    if len(value) > MAX_VALUE:
        return f"must be at most {MAX_VALUE} characters."
    if not VALUE.fullmatch(value):
        return (
            "may hold only visible ASCII characters, spaces and tabs "
            "(no CR, LF, NUL or other control characters)."
        )
    if value != value.strip(" \t"):
        return "must not start or end with a space or tab."
    return None


def custom_headers(errors: FieldErrors, value: Any, path: str) -> dict[str, str] | None:
    """The validated header map at `path` (None when absent), every problem in `errors`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.add(path, "must be an object of header names to string values.")
        return None
    ok = _whole_map_ok(errors, value, path)
    seen: set[str] = set()
    for name, header_value in value.items():
        problem = name_problem(name) or value_problem(header_value)
        if problem is None and name.lower() in seen:
            problem = "is given twice: header names are case-insensitive."
        seen.add(name.lower())
        if problem is not None:
            errors.add(f"{path}.{name}", problem)
            ok = False
    return dict(value) if ok else None


def _whole_map_ok(errors: FieldErrors, value: dict[Any, Any], path: str) -> bool:
    if len(value) > MAX_HEADERS:
        errors.add(path, f"must have at most {MAX_HEADERS} headers.")
        return False
    total = sum(len(k) + (len(v) if isinstance(v, str) else 0) for k, v in value.items())
    if total > MAX_TOTAL:
        errors.add(path, f"names and values together must be at most {MAX_TOTAL} characters.")
        return False
    return True
