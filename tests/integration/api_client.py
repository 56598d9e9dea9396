"""Test helper: an HTTP client of the API for one key."""

from __future__ import annotations

from typing import Any

import aiohttp


class Api:
    """Calls the API as one key; every call returns (status, json body)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(
        self, method: str, path: str, body: Any = None, **kwargs: Any
    ) -> tuple[int, Any]:
        async with self.session.request(method, path, json=body, **kwargs) as response:
            assert response.headers.get("Request-Id", "").startswith("req_")
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def create_webhook(
        self, url: str, events: list[str] | None = None, **extra: Any
    ) -> dict[str, Any]:
        status, body = await self.call(
            "POST",
            "/v2/event-destinations",
            {"name": "hook", "webhook": {"url": url}, "events": events or ["*"], **extra},
        )
        assert status == 201, body
        return dict(body)

    async def publish(self, event_type: str, data: dict[str, Any] | None = None) -> str:
        status, body = await self.call(
            "POST", "/v2/events", {"type": event_type, "data": data or {}}
        )
        assert status == 202, body
        return str(body["id"])
