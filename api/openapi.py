"""Herald's OpenAPI 3.1 spec: api/openapi.yaml, read once at import."""

from __future__ import annotations

import contextlib
import copy
from importlib import metadata, resources
from typing import Any

import yaml

try:  # libyaml's safe loader when PyYAML was built with it: ten times faster on this file
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # pragma: no cover - PyYAML without libyaml
    from yaml import SafeLoader  # type: ignore[assignment]

SPEC_FILE = "openapi.yaml"
DISTRIBUTION = "herald"


def _load() -> dict[str, Any]:
    text = resources.files(__package__ or "api").joinpath(SPEC_FILE).read_text(encoding="utf-8")
    spec = yaml.load(text, Loader=SafeLoader)
    if not isinstance(spec, dict):
        raise TypeError(f"{SPEC_FILE} must hold a mapping, not {type(spec).__name__}")
    # The installed version wins, so the spec never lags behind a release; a source tree
    # that is not installed keeps the file's version.
    with contextlib.suppress(metadata.PackageNotFoundError):
        spec["info"]["version"] = metadata.version(DISTRIBUTION)
    return spec


_SPEC = _load()


def build_spec() -> dict[str, Any]:
    """The full spec as plain JSON-compatible data; a fresh copy the caller may change."""
    return copy.deepcopy(_SPEC)
