"""HERALD_HTTPS_ONLY at the API edge: plain-http URLs are a 400 naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from api import validation
from api.errors import RequestValidationError
from pipeline.outbound import AddressPolicy
from pipeline.settings import Settings

HTTPS_ONLY = Settings(https_only=True)
SQS = "sqs.eu-west-1.amazonaws.com/123456789012/orders"
KEY_ID, SECRET = "AKIAUNITTESTKEY00000", "unit+test/SECRET/0000000000000000000000"


def _errors(call: Any) -> dict[str, list[str]]:
    with pytest.raises(RequestValidationError) as caught:
        call()
    return caught.value.errors


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"webhook": {"url": "http://e.example/h"}}, "webhook.url"),
        ({"webhook": {"url": "HTTP://e.example/h"}}, "webhook.url"),
        (
            {
                "type": "aws_sqs",
                "aws_sqs": {"queue_url": f"http://{SQS}", "key": KEY_ID, "secret": SECRET},
            },
            "aws_sqs.queue_url",
        ),
    ],
)
def test_create_refuses_plain_http(body: dict[str, Any], field: str) -> None:
    full = {"name": "n", "events": ["*"], **body}
    errors = _errors(lambda: validation.create_destination(full, HTTPS_ONLY))
    assert list(errors) == [field]
    validation.create_destination(full, Settings())  # accepted while the setting is off


def test_create_accepts_https() -> None:
    body = {"name": "n", "events": ["*"], "webhook": {"url": "https://e.example/h"}}
    assert validation.create_destination(body, HTTPS_ONLY)["config"]["url"].startswith("https")


def test_patch_refuses_plain_http() -> None:
    body = {"webhook": {"url": "http://e.example/h"}}
    errors = _errors(lambda: validation.update_destination(body, "webhook", HTTPS_ONLY))
    assert list(errors) == ["webhook.url"]
    # A PATCH that leaves the URL alone is not refused for a URL made before the switch.
    assert validation.update_destination({"name": "x"}, "webhook", HTTPS_ONLY) == {"name": "x"}


def test_operator_endpoints_must_be_https_too() -> None:
    with pytest.raises(ValidationError, match="hookdeck_base_url"):
        Settings(https_only=True, hookdeck_base_url="http://hookdeck.local")
    with pytest.raises(ValidationError, match="aws_endpoint_url"):
        Settings(https_only=True, aws_endpoint_url="http://127.0.0.1:5000")
    assert Settings(hookdeck_base_url="http://hookdeck.local").https_only is False


def test_policy_schemes() -> None:
    assert AddressPolicy(https_only=True).permits_scheme("https")
    assert not AddressPolicy(https_only=True).permits_scheme("http")
    assert AddressPolicy().permits_scheme("http")
