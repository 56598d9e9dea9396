"""`webhook.custom_headers`: what a tenant may add to its deliveries (issue 12, B6).

A value with CR/LF used to be accepted with 201 and then raise inside the delivery runner
on every attempt; these tests hold the validator to the rules in pipeline/sinks/headers.py,
by example and by property: whatever it accepts goes on the wire as exactly those headers.
"""

from __future__ import annotations

import io
from http.client import parse_headers
from typing import Any

import pytest
from aiohttp.http_writer import _py_serialize_headers
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from api.errors import RequestValidationError
from api.validation import create_destination, update_destination
from pipeline.settings import Settings
from pipeline.sinks.fields import FieldErrors
from pipeline.sinks.headers import MAX_HEADERS, RESERVED, TOKEN, custom_headers, reserved

SETTINGS = Settings()
PATH = "webhook.custom_headers"
GOOD = {"name": "hook", "webhook": {"url": "https://example.com/h"}, "events": ["a.b"]}


def check(value: Any) -> tuple[dict[str, str] | None, dict[str, list[str]]]:
    errors = FieldErrors()
    return custom_headers(errors, value, PATH), errors.by_field


def create_errors(headers: Any) -> dict[str, list[str]]:
    body = {**GOOD, "webhook": {**GOOD["webhook"], "custom_headers": headers}}
    with pytest.raises(RequestValidationError) as caught:
        create_destination(body, SETTINGS)
    return caught.value.errors


def test_the_injection_from_the_issue_is_a_400_naming_the_header() -> None:
    assert set(create_errors({"X-Test": "a\r\nInjected: yes"})) == {f"{PATH}.X-Test"}


def test_patch_refuses_it_too() -> None:
    body = {"webhook": {"url": "https://example.com/h", "custom_headers": {"X-Test": "a\nb"}}}
    with pytest.raises(RequestValidationError) as caught:
        update_destination(body, "webhook", SETTINGS)
    assert set(caught.value.errors) == {f"{PATH}.X-Test"}


@pytest.mark.parametrize(
    "name",
    [
        "webhook-signature",
        "Webhook-Id",
        "CONTENT-TYPE",
        "Content-Length",
        "host",
        "Transfer-Encoding",
        "connection",
        "User-Agent",
        "Proxy-Authorization",
    ],
)
def test_reserved_names_are_refused_in_any_case(name: str) -> None:
    assert set(create_errors({name: "x"})) == {f"{PATH}.{name}"}


@pytest.mark.parametrize("name", ["", "X Test", "X:Test", "X-Tést", "X\r\nY", "(x)", "a" * 129])
def test_names_must_be_tokens(name: str) -> None:
    assert set(create_errors({name: "x"})) == {f"{PATH}.{name}"}


@pytest.mark.parametrize("value", ["a\x00b", "a\rb", "a\nb", "\x7f", "é", " x", "x\t", "a" * 4097])
def test_bad_values(value: str) -> None:
    assert set(create_errors({"X-Ok": value})) == {f"{PATH}.X-Ok"}


def test_count_total_size_and_duplicates() -> None:
    many = {f"X-{i}": "v" for i in range(MAX_HEADERS + 1)}
    assert set(create_errors(many)) == {PATH}
    big = {f"X-{i}": "v" * 4000 for i in range(3)}
    assert set(create_errors(big)) == {PATH}
    assert set(create_errors({"X-A": "1", "x-a": "2"})) == {f"{PATH}.x-a"}
    assert set(create_errors(["X-A"])) == {PATH}


def test_a_good_map_is_accepted_and_only_names_are_public() -> None:
    headers = {"Authorization": "Bearer abc.def", "X-Team": "core\tblue", "X-Empty": ""}
    fields = create_destination(
        {**GOOD, "webhook": {**GOOD["webhook"], "custom_headers": headers}}, SETTINGS
    )
    assert fields["config"]["custom_headers"] == ["Authorization", "X-Team", "X-Empty"]
    assert fields["credentials"]["custom_headers"] == headers
    assert "Bearer abc.def" not in repr(fields["config"])


HEADER_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from("\r\n\x00\t :"),
    max_size=12,
)
NAMES = HEADER_TEXT | st.sampled_from(sorted(RESERVED)) | st.from_regex(TOKEN, fullmatch=True)
VALUES = HEADER_TEXT | st.from_regex(r"[!-~][ -~\t]{0,10}[!-~]", fullmatch=True)


@given(st.dictionaries(NAMES, VALUES | st.integers() | st.none(), max_size=25))
def test_accepted_maps_go_on_the_wire_as_exactly_those_headers(headers: dict[str, Any]) -> None:
    accepted, errors = check(headers)
    if accepted is None:
        assert errors, "a refusal always says why"
        assert all(field == PATH or field.startswith(PATH + ".") for field in errors)
        named = {field.removeprefix(PATH + ".") for field in errors if field != PATH}
        assert named <= set(headers), "errors name only headers that were given"
        return
    assert not errors
    # aiohttp's own serializer is what raised inside the runner on a CR/LF value.
    wire = _py_serialize_headers("POST / HTTP/1.1", CIMultiDict(accepted))
    parsed = parse_headers(io.BytesIO(wire.split(b"\r\n", 1)[1]))
    assert [(k, v.strip(" \t")) for k, v in parsed.items()] == list(accepted.items())
    assert not any(reserved(name) for name in accepted)


@given(st.text(max_size=8), st.sampled_from(["\r", "\n", "\x00", "\x01", "\x1f", "\x7f"]))
def test_any_control_character_in_a_value_is_refused(prefix: str, control: str) -> None:
    accepted, errors = check({"X-Ok": prefix + control})
    assert accepted is None
    assert f"{PATH}.X-Ok" in errors


@given(st.sampled_from([*sorted(RESERVED), "webhook-x", "proxy-x"]), st.randoms())
def test_reserved_names_are_refused_whatever_their_case(name: str, rnd: Any) -> None:
    mixed = "".join(c.upper() if rnd.random() < 0.5 else c for c in name)
    accepted, errors = check({mixed: "v"})
    assert accepted is None
    assert f"{PATH}.{mixed}" in errors
