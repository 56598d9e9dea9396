"""Destination sinks, one module per destination type, found by module name."""

from __future__ import annotations

import importlib

from pipeline.sinks.base import Sink


def load_sink(destination_type: str) -> Sink:
    """The SINK of module pipeline.sinks.<type>; ValueError for an unknown type."""
    if not destination_type.isidentifier() or destination_type == "base":
        raise ValueError(f"unknown destination type {destination_type!r}")
    try:
        module = importlib.import_module(f"pipeline.sinks.{destination_type}")
    except ModuleNotFoundError as exc:
        raise ValueError(f"unknown destination type {destination_type!r}") from exc
    sink: Sink = module.SINK
    return sink
