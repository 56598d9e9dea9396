"""Create/publish validation: every failing field named at once, by dotted path."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.errors import RequestValidationError
from api.validation import create_destination as create
from api.validation import publish_event
from pipeline.settings import Settings

SETTINGS = Settings()


def create_destination(body: Any) -> dict[str, Any]:
    return create(body, SETTINGS)


GOOD = {"name": "hook", "webhook": {"url": "https://example.com/h"}, "events": ["a.b"]}


def errors_of(body: Any) -> dict[str, list[str]]:
    with pytest.raises(RequestValidationError) as caught:
        create_destination(body)
    return caught.value.errors


def test_minimal_webhook_is_accepted_with_defaults() -> None:
    fields = create_destination(GOOD)
    assert fields["type"] == "webhook"
    assert fields["config"] == {"url": "https://example.com/h"}
    assert fields["credentials"] == {}


def test_every_failing_field_is_listed_at_once() -> None:
    errors = errors_of({"webhook": {"url": "ftp://x", "bogus": 1}, "events": [], "color": "red"})
    assert set(errors) == {"name", "webhook.url", "webhook.bogus", "events", "color"}


@pytest.mark.parametrize(
    ("events", "field"),
    [
        (None, "events"),
        ([], "events"),
        (["*", "a.b"], "events"),
        (["A.B"], "events[0]"),
        (["single"], "events[0]"),
        ("a.b", "events"),
        ([1], "events[0]"),
    ],
)
def test_bad_event_lists(events: Any, field: str) -> None:
    assert field in errors_of({**GOOD, "events": events})


def test_star_and_prefixes_are_accepted() -> None:
    assert create_destination({**GOOD, "events": ["*"]})["events"] == ["*"]
    assert create_destination({**GOOD, "events": ["task_run.*", "x.y"]})["events"] == [
        "task_run.*",
        "x.y",
    ]


@pytest.mark.parametrize(
    "secret", ["whsec_", "whsec_short", "nope", "whsec_!!!!" * 4, "whsec_" + "A" * 200]
)
def test_bad_webhook_secrets(secret: str) -> None:
    assert "webhook.secret" in errors_of({**GOOD, "webhook": {**GOOD["webhook"], "secret": secret}})


def test_other_types_config_object_is_refused() -> None:
    assert "aws_sqs" in errors_of({**GOOD, "aws_sqs": {"queue_url": "https://q"}})
    assert "type" in errors_of({**GOOD, "type": "carrier_pigeon"})


@pytest.mark.parametrize("body", [[], "x", 1, None])
def test_body_must_be_an_object(body: Any) -> None:
    assert errors_of(body) == {"body": ["must be a JSON object."]}


def test_reserved_custom_headers_are_refused() -> None:
    assert "webhook.custom_headers.webhook-id" in errors_of(
        {**GOOD, "webhook": {**GOOD["webhook"], "custom_headers": {"webhook-id": "x"}}}
    )


@given(
    st.dictionaries(
        st.text(max_size=5),
        st.none() | st.integers() | st.text(max_size=5) | st.lists(st.text(max_size=3), max_size=2),
        max_size=6,
    )
)
def test_arbitrary_objects_never_crash(body: dict[str, Any]) -> None:
    try:
        create_destination(body)
    except RequestValidationError as exc:
        assert exc.errors
        assert all(isinstance(m, list) and m for m in exc.errors.values())


def test_publish_validation() -> None:
    assert publish_event({"type": "a.b", "data": {}})["id"] is None
    with pytest.raises(RequestValidationError) as caught:
        publish_event({"type": "Bad", "data": [], "id": "nope", "extra": 1})
    assert set(caught.value.errors) == {"type", "data", "id", "extra"}
