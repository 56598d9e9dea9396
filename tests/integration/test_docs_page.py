"""The API reference (/docs/, Swagger UI) in a real browser against the test stack: every
operation of the spec is on the page, and "Try it out" with a pasted key gets a real answer.

Every request the page makes to anywhere but the API is aborted and recorded, and the test
asserts there was none: the page works with no network beyond Herald. With
HERALD_DOCS_SCREENSHOTS set to a folder, the test saves the screenshot the README shows
(docs/api-reference.png).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import Browser, Route, expect

from api.openapi import build_spec
from tests.integration.api_client import Api
from tests.integration.conftest import Stack, page_problems

SPEC = build_spec()
METHODS = ("get", "put", "post", "patch", "delete")
# The API's operations, and the operator events (the spec's `webhooks`, shown as operations).
OPERATIONS = [
    op
    for items in (SPEC["paths"], SPEC.get("webhooks", {}))
    for item in items.values()
    for method, op in item.items()
    if method in METHODS
]
LIST_DESTINATIONS = SPEC["paths"]["/v2/event-destinations"]["get"]["operationId"]
SCREENSHOTS = os.environ.get("HERALD_DOCS_SCREENSHOTS")
if SCREENSHOTS:
    Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
# A loaded two-core machine runs four stacks: generous, but every wait is for a condition.
expect.set_options(timeout=20_000)


async def test_docs_render_every_operation_and_try_it_out_calls_the_api(
    stack: Stack, api: Api, browser: Browser
) -> None:
    destination = await api.create_webhook("https://receiver.example/docs-test")
    api.created.append(destination["id"])  # deleted after the test whatever happens

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    herald = urlsplit(stack.api_url).netloc
    elsewhere: list[str] = []

    async def only_herald(route: Route) -> None:
        if urlsplit(route.request.url).netloc == herald:
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    await context.route("**/*", only_herald)
    page = await context.new_page()
    problems = page_problems(page)
    await page.goto(f"{stack.api_url}/docs")  # redirected to /docs/
    assert page.url == f"{stack.api_url}/docs/"

    # Every operation, once under each of its tags (Swagger UI groups by tag).
    blocks = page.locator(".opblock")
    await expect(blocks).to_have_count(sum(len(op.get("tags") or [""]) for op in OPERATIONS))
    shown_ids = await page.locator(".opblock-summary-operation-id").all_inner_texts()
    assert sorted(set(shown_ids)) == sorted(op["operationId"] for op in OPERATIONS)
    shown_summaries = set(await page.locator(".opblock-summary-description").all_inner_texts())
    assert shown_summaries == {op["summary"] for op in OPERATIONS}

    # Authorize: the spec's BearerAuth scheme (an API key) asks for the key itself.
    await page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".modal-ux")
    bearer = dialog.locator(".auth-container").filter(
        has=page.locator("code", has_text="BearerAuth")
    )
    await bearer.locator("input").fill(stack.api_key)
    await bearer.locator("button.modal-btn.authorize").click()
    await expect(bearer.locator("button", has_text="Logout")).to_be_visible()
    await bearer.locator("button.btn-done").click()
    await expect(dialog).to_have_count(0)
    if SCREENSHOTS:
        await page.screenshot(path=str(Path(SCREENSHOTS) / "api-reference.png"))

    # Try it out → Execute on the destination list: a real call to this API, with the key.
    block = blocks.filter(
        has=page.locator(
            ".opblock-summary-operation-id", has_text=re.compile(f"^{LIST_DESTINATIONS}$")
        )
    ).first
    await block.locator(".opblock-summary").click()
    await block.locator("button.try-out__btn").click()
    async with page.expect_request(re.compile(r"/v2/event-destinations(\?|$)")) as sent:
        await block.locator("button.execute").click()
    request = await sent.value
    assert request.url.startswith(f"{stack.api_url}/v2/event-destinations")
    assert request.headers["authorization"] == f"Bearer {stack.api_key}"
    live = block.locator(".live-responses-table .response")
    await expect(live.locator(".response-col_status")).to_have_text("200")
    await expect(live.locator(".response-col_description")).to_contain_text(destination["id"])

    assert elsewhere == []
    assert problems == []
    await context.close()
