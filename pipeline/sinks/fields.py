"""Field checks that sinks use to validate their config objects, by dotted path.

Every check adds a message to a FieldErrors under the field's path and returns the cleaned
value, or None; the caller raises once, with every failing field listed.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

MAX_STRING = 2048


class FieldErrors:
    """Messages by dotted field path."""

    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, path: str, message: str) -> None:
        """Record one problem with the field at `path`."""
        self.by_field.setdefault(path, []).append(message)

    def __bool__(self) -> bool:
        return bool(self.by_field)


def config_object(errors: FieldErrors, raw: Any, path: str, type_name: str) -> dict[str, Any]:
    """The type's config object, or {} after recording why it is unusable."""
    if not isinstance(raw, dict):
        errors.add(path, f"is required for type '{type_name}' and must be an object.")
        return {}
    return raw


def unknown_fields(
    errors: FieldErrors, raw: Mapping[str, Any], path: str, known: Iterable[str]
) -> None:
    """Each field not in `known` is an error of its own."""
    for name in sorted(set(raw) - set(known)):
        errors.add(f"{path}.{name}", "is not a known field.")


def pick(
    errors: FieldErrors, raw: Mapping[str, Any], path: str, name: str, aliases: tuple[str, ...] = ()
) -> Any:
    """The value of `name` or one of its aliases; giving two of them is an error."""
    given = [n for n in (name, *aliases) if raw.get(n) is not None]
    if len(given) > 1:
        errors.add(f"{path}.{given[1]}", f"is an alias of '{name}': give only one of them.")
    return raw.get(given[0]) if given else None


def string(
    errors: FieldErrors,
    raw: Mapping[str, Any],
    path: str,
    name: str,
    *,
    required: bool = True,
    aliases: tuple[str, ...] = (),
    max_length: int = MAX_STRING,
) -> str | None:
    """A non-empty string field (under `name` or an alias)."""
    value = pick(errors, raw, path, name, aliases)
    field = f"{path}.{name}"
    if value is None:
        if required:
            errors.add(field, "is required.")
        return None
    if not isinstance(value, str) or not value.strip():
        errors.add(field, "must be a non-empty string.")
        return None
    if len(value) > max_length:
        errors.add(field, f"must be at most {max_length} characters.")
        return None
    return value


def http_url(errors: FieldErrors, value: Any, field: str, *, required: bool = True) -> str | None:
    """An absolute http(s) URL with a host."""
    if value is None:
        if required:
            errors.add(field, "is required.")
        return None
    if not isinstance(value, str):
        errors.add(field, "must be a string.")
        return None
    if len(value) > MAX_STRING:
        errors.add(field, f"must be at most {MAX_STRING} characters.")
        return None
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        errors.add(field, "must be an absolute http or https URL.")
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        errors.add(field, "must be an absolute http or https URL.")
        return None
    return value


def string_map(
    errors: FieldErrors, value: Any, field: str, *, max_keys: int = 50, max_value: int = 1024
) -> dict[str, str] | None:
    """An object of string values (headers, attributes)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        errors.add(field, "must be an object of string keys to string values.")
        return None
    if len(value) > max_keys:
        errors.add(field, f"must have at most {max_keys} keys.")
        return None
    if any(len(v) > max_value for v in value.values()):
        errors.add(field, f"values must be at most {max_value} characters.")
        return None
    return value


def base64_bytes(encoded: str) -> bytes | None:
    """Decode standard or URL-safe base64 (padding optional); None if it is neither."""
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        if "-" in encoded or "_" in encoded:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None
