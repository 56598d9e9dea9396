"""What a change to a destination's configuration does to its (write-only) credentials.

Credentials are never shown, so a PATCH that gives a type's config object again without
them keeps the stored ones (merged field by field: the fields given replace, the others
stay), except those that would be presented to a different server. Each type says what
"the server" is, and which credential fields are presented to it:

| type     | the server (its identity)                   | cleared when it changes |
| -------- | ------------------------------------------- | ----------------------- |
| webhook  | the URL's origin: scheme, host, port        | custom_headers          |
| rabbitmq | server_url's host and port                  | username, password      |
| kafka    | the set of bootstrap_servers (host, port)   | username, password      |

A webhook's signing secret is kept across a URL change: it proves Herald to the receiver
and is never sent. Other types present their credentials to the provider's fixed service
(AWS, Google, Azure, Hookdeck; endpoint overrides are the operator's), so they are kept.
A change of type starts from the new type's credentials alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from pipeline.sinks.kafka import parse_servers
from pipeline.sinks.rabbitmq import parse_server_url

Identity = tuple[Any, ...] | None


def _webhook_server(config: Mapping[str, Any]) -> Identity:
    try:
        parts = urlsplit(str(config.get("url") or ""))
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    return (parts.scheme.lower(), (parts.hostname or "").lower(), port)


def _rabbitmq_server(config: Mapping[str, Any]) -> Identity:
    parsed = parse_server_url(str(config.get("server_url") or ""))
    if parsed is None:
        return None
    server, _ = parsed
    return (server.host.lower(), server.port)


def _kafka_servers(config: Mapping[str, Any]) -> Identity:
    servers = parse_servers(config.get("bootstrap_servers"))
    if servers is None:
        return None
    return tuple(sorted({(host.lower(), port) for host, port in servers}))


SERVER_BOUND: dict[str, tuple[Callable[[Mapping[str, Any]], Identity], tuple[str, ...]]] = {
    "webhook": (_webhook_server, ("custom_headers",)),
    "rabbitmq": (_rabbitmq_server, ("username", "password")),
    "kafka": (_kafka_servers, ("username", "password")),
}


def server_changed(destination_type: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether `new` config points the destination at another server than `old` did."""
    entry = SERVER_BOUND.get(destination_type)
    if entry is None:
        return False
    identity, _ = entry
    return identity(old) != identity(new)


def merged(
    destination_type: str,
    current: tuple[Mapping[str, Any], Mapping[str, Any]],
    new_config: Mapping[str, Any],
    given: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config and credentials after a PATCH of the same type's config object.

    `current` is the stored (config, opened credentials); `given` the credentials in the
    PATCH. The credentials given replace, the omitted ones stay unless they are bound to a
    server the new config no longer names.
    """
    current_config, current_credentials = current
    kept = dict(current_credentials)
    if server_changed(destination_type, current_config, new_config):
        for name in SERVER_BOUND[destination_type][1]:
            kept.pop(name, None)
    credentials = {**kept, **given}
    return with_public_names(destination_type, new_config, credentials), credentials


def with_public_names(
    destination_type: str, config: Mapping[str, Any], credentials: Mapping[str, Any]
) -> dict[str, Any]:
    """`config` with what it shows of the credentials: a webhook's custom header names."""
    shown = dict(config)
    if destination_type == "webhook":
        headers = credentials.get("custom_headers")
        if headers:
            shown["custom_headers"] = list(headers)
        else:
            shown.pop("custom_headers", None)
    return shown
