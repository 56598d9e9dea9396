"""Destination sinks, one module per destination type, found by module name."""

from __future__ import annotations

import importlib

from pipeline.sinks.base import Sink

_loaded: dict[str, Sink] = {}
NOT_SINKS = frozenset({"base", "fields"})


def load_sink(destination_type: str) -> Sink:
    """The SINK of module pipeline.sinks.<type>; ValueError for an unknown type."""
    sink = _loaded.get(destination_type)
    if sink is not None:
        return sink
    if not destination_type.isidentifier() or destination_type in NOT_SINKS:
        raise ValueError(f"unknown destination type {destination_type!r}")
    try:
        module = importlib.import_module(f"pipeline.sinks.{destination_type}")
    except ModuleNotFoundError as exc:
        raise ValueError(f"unknown destination type {destination_type!r}") from exc
    found: Sink | None = getattr(module, "SINK", None)
    if found is None:  # a helper module (shared code of several sinks), not a sink
        raise ValueError(f"unknown destination type {destination_type!r}")
    _loaded[destination_type] = found
    return found


async def aclose_all() -> None:
    """Close the process-wide resources of every sink loaded so far."""
    for sink in list(_loaded.values()):
        await sink.aclose()
