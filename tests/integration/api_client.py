"""Test helper: an HTTP client of the API for one key."""

from __future__ import annotations

from typing import Any

import aiohttp

CREATE = ("POST", "/v2/event-destinations")


class Api:
    """Calls the API as one key; every call returns (status, json body).

    Remembers the destinations it creates, so the fixture that made it deletes them after
    the test (`delete_created`): one left behind would receive every later matching event
    of its tenant, and one on an unreachable host would keep the worker busy retrying.
    """

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.created: list[str] = []

    async def call(
        self, method: str, path: str, body: Any = None, **kwargs: Any
    ) -> tuple[int, Any]:
        async with self.session.request(method, path, json=body, **kwargs) as response:
            assert response.headers.get("Request-Id", "").startswith("req_")
            if response.content_type != "application/json":
                return response.status, await response.text()
            answer = await response.json()
        if (method, path.partition("?")[0], response.status) == (*CREATE, 201):
            self.created.append(answer["id"])
        return response.status, answer

    async def delete_created(self) -> list[str]:
        """Delete every destination this client created that still exists; their ids."""
        deleted = []
        while self.created:
            destination_id = self.created.pop()
            async with self.session.delete(f"/v2/event-destinations/{destination_id}") as response:
                if response.status == 200:
                    deleted.append(destination_id)
        return deleted

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
