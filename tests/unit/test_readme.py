"""The README's table of destination types names only fields the API takes (issue 12, D22:
it said `headers` for `custom_headers` and gave aws_sqs credential aliases the code refuses)."""

from __future__ import annotations

import re

import pytest

from pipeline.settings import ROOT, Settings
from pipeline.sinks import load_sink
from pipeline.sinks.fields import FieldErrors

ROW = re.compile(r"^\| `(?P<type>[a-z0-9_]+)` \| (?P<fields>[^|]+) \|", re.MULTILINE)


def _documented() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text()
    table = text.split("## Destination types against real accounts", 1)[1]
    return {
        row["type"]: [
            name
            for names in re.findall(r"`([^`]+)`", row["fields"])
            for name in names.split("/")
            if re.fullmatch(r"[a-z_]+", name)  # not `whsec_…` or a URL
        ]
        for row in ROW.finditer(table)
    }


def test_the_table_covers_the_types() -> None:
    assert {"webhook", "aws_sqs", "aws_kinesis", "aws_s3", "rabbitmq", "kafka"} <= set(
        _documented()
    )


@pytest.mark.parametrize(("destination_type", "names"), sorted(_documented().items()))
def test_every_field_the_readme_names_is_one_the_api_takes(
    destination_type: str, names: list[str]
) -> None:
    sink = load_sink(destination_type)
    for name in names:
        errors = FieldErrors()
        sink.validate({name: "x"}, errors, destination_type, Settings())
        unknown = errors.by_field.get(f"{destination_type}.{name}", [])
        assert "is not a known field." not in unknown, f"{destination_type}.{name}"
