"""Bad input gets a clear 4xx with the field named, never a 5xx."""

from __future__ import annotations

import io

import pytest

from tests.integration.api_client import Api

DESTINATIONS = "/v2/event-destinations"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[" * 5000 + b"]" * 5000, "application/json"),  # deeper than any parser allows
        (b'{"name": "\xff\xfe"}', "application/json"),  # invalid UTF-8
        (b'{"name": "x"}', "application/xml"),
        (b'{"name": "x"}', "multipart/form-data; boundary=x"),
        (b"null", "application/json"),
        (b'"a string"', "application/json"),
        (b"{}", "application/vnd.herald+json"),  # accepted type, empty object
    ],
)
async def test_malformed_create_bodies(api: Api, body: bytes, content_type: str) -> None:
    async with api.session.post(
        DESTINATIONS, data=body, headers={"Content-Type": content_type}
    ) as response:
        assert response.status == 400, await response.text()
        payload = await response.json()
        assert payload["errors"]
        assert response.headers["Content-Type"].startswith("application/json")


async def test_huge_strings_are_refused_with_their_field(api: Api) -> None:
    status, body = await api.call(
        "POST",
        DESTINATIONS,
        {
            "name": "n" * 10_000,
            "webhook": {"url": "https://e.com/" + "p" * 5000},
            "events": ["a." + "b" * 500],
            "metadata": {f"k{i}": "v" for i in range(60)},
        },
    )
    assert status == 400
    assert set(body["errors"]) == {"name", "webhook.url", "events[0]", "metadata"}


async def test_body_over_the_limit_is_413(api: Api) -> None:
    async with api.session.post(
        "/v2/events/batch",
        data=io.BytesIO(b"{" + b" " * (9 * 1024 * 1024) + b"}"),
        headers={"Content-Type": "application/json"},
    ) as response:
        assert response.status == 413
        assert (await response.json())["errors"][0]["code"] == "payload_too_large"


async def test_unknown_routes_and_methods_answer_json(api: Api) -> None:
    status, body = await api.call("GET", "/v2/nothing-here")
    assert (status, body["errors"][0]["code"]) == (404, "resource_missing")
    status, body = await api.call("PUT", DESTINATIONS)
    assert (status, body["errors"][0]["code"]) == (405, "method_not_allowed")


async def test_bad_query_parameters(api: Api) -> None:
    for query in ("?limit=abc", "?limit=1000", "?cursor=%%%", "?created_after=yesterday"):
        status, body = await api.call("GET", "/v2/events" + query)
        assert status == 400, (query, body)
