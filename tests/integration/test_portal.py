"""The customer portal (/portal) in a real browser: Debian's chromium driven by Playwright
against the test stack, with a real webhook receiver.

The page is opened as a customer would open it: the platform (its platform key) creates a
tenant, opens a portal session for it (`POST /v2/tenants/{id}/portal-sessions`) and hands
out the session's URL, `/portal/#token=<jwt>`. Every check is a Playwright expectation
that waits for the page (no sleeps), and what the page shows is checked against what the
API and the receiver saw. With HERALD_PORTAL_SCREENSHOTS set to a
folder, the scenario saves the screenshots the README shows (docs/portal/).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt
import orjson
import pytest
from playwright.async_api import (
    Browser,
    Locator,
    Page,
    expect,
)

from api.openapi import build_spec
from pipeline.ids import new_id
from tests.integration.api_client import Api
from tests.integration.conftest import PLATFORM_KEY, PORTAL_SIGNING_KEY, Stack, page_problems
from tests.integration.test_tenants import client, new_tenant
from tests.support import Receiver, eventually

SCREENSHOTS = os.environ.get("HERALD_PORTAL_SCREENSHOTS")
if SCREENSHOTS:
    Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
DESKTOP = {"width": 1100, "height": 800}
PHONE = {"width": 360, "height": 740}
SECRET = re.compile(r"^whsec_")
LOG_PAGE = 20  # deliveries per page of the portal's delivery log
# A loaded two-core machine runs four stacks: generous, but every wait is for a condition.
expect.set_options(timeout=20_000)


async def _open(browser: Browser, url: str, viewport: dict[str, int] = DESKTOP) -> Page:
    context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    page = await context.new_page()
    page.problems = page_problems(page)  # type: ignore[attr-defined]
    await page.goto(url)
    return page


THEME = {"name": "Acme", "primary_color": "#0a7d4f"}
RETURN_URL = "https://platform.example/settings"


@dataclass(frozen=True)
class Customer:
    """A tenant of the platform, its portal session's URL, and the platform's client acting
    for it (Herald-Tenant), which deletes what it created after the test."""

    tenant_id: str
    url: str
    token: str
    api: Api


@pytest.fixture
async def customer(stack: Stack, platform: Api) -> AsyncIterator[Customer]:
    async with _customer(stack, platform) as made:
        yield made


@contextlib.asynccontextmanager
async def _customer(stack: Stack, platform: Api) -> AsyncIterator[Customer]:
    tenant = await new_tenant(platform)
    status, session = await platform.call(
        "POST",
        f"/v2/tenants/{tenant['id']}/portal-sessions",
        {"return_url": RETURN_URL, "theme": THEME},
    )
    assert status == 201, session
    # The session's URL names HERALD_PUBLIC_URL (the stack keeps the default); the test
    # stack's API listens elsewhere.
    link = urlsplit(session["url"])
    url = f"{stack.api_url}{link.path}#{link.fragment}"
    try:
        async with client(stack.api_url, PLATFORM_KEY, tenant["id"]) as acting:
            yield Customer(tenant["id"], url, session["token"], acting)
    finally:
        await platform.call("DELETE", f"/v2/tenants/{tenant['id']}")


def _signed(claims: dict[str, Any], key: str = PORTAL_SIGNING_KEY) -> str:
    """A portal session token signed here, with the test stack's key or another."""
    now_s = int(time.time())
    base = {"iss": "herald", "aud": "herald-portal", "iat": now_s, "jti": new_id("ps_")}
    return jwt.encode({**base, **claims}, key, algorithm="HS256")


async def _shot(
    page: Page, name: str, *, full_page: bool = False, only: Locator | None = None
) -> None:
    """Save a screenshot for docs/portal/ (of the element `only`, if given)."""
    if not SCREENSHOTS:
        return
    path = str(Path(SCREENSHOTS) / f"{name}.png")
    if only is not None:
        await only.screenshot(path=path)
    else:
        await page.screenshot(path=path, full_page=full_page)


async def _delivery_of(api: Api, destination_id: str, status: str) -> dict[str, Any] | None:
    _, page = await api.call("GET", f"/v2/event-destinations/{destination_id}/event-deliveries")
    found = [d for d in page["data"] if d["status"] == status]
    return found[0] if found else None


async def test_a_customer_creates_a_webhook_and_follows_its_deliveries(
    customer: Customer, receiver: Receiver, browser: Browser
) -> None:
    api = customer.api  # the platform, publishing and checking for this customer
    event_type = f"portal.{new_id('t_').lower()}"
    page = await _open(browser, customer.url)
    await expect(page.get_by_role("heading", name="Destinations")).to_be_visible()
    assert "token" not in page.url  # taken from the address bar as soon as it was read
    # The platform's theme, from the session's claims.
    await expect(page.get_by_text("Acme · Webhook settings")).to_be_visible()
    await expect(page.get_by_role("link", name="Back to Acme")).to_have_attribute(
        "href", RETURN_URL
    )
    primary = await page.evaluate(
        "getComputedStyle(document.documentElement).getPropertyValue('--primary')"
    )
    assert primary.strip() == THEME["primary_color"]

    # Create through the form; the receiver refuses until told otherwise.
    receiver.status = 500
    await page.get_by_role("link", name="Add destination").click()
    await expect(page.get_by_label("Type")).to_have_value("webhook")
    await page.get_by_label("Name").fill("Orders webhook")
    await page.get_by_label("Events").fill(event_type)
    await page.get_by_label("URL").fill(f"{receiver.url}/orders")
    await _shot(page, "create-form", full_page=True)
    await page.get_by_role("button", name="Create destination").click()
    shown = page.get_by_role("dialog", name="Your signing secret")
    await expect(shown.get_by_label("Signing secret")).to_have_value(SECRET)
    first_secret = await shown.get_by_label("Signing secret").input_value()
    await shown.get_by_role("button", name="I have stored it").click()
    await expect(page.get_by_role("heading", name="Orders webhook")).to_be_visible()
    destination_id = urlsplit(page.url).fragment.split("/")[2]
    api.created.append(destination_id)  # deleted after the test whatever happens

    # An event published through the API fails at the receiver, then shows in the log.
    event_id = await api.publish(event_type, {"order": 1})
    failed = await eventually(
        lambda: _delivery_of(api, destination_id, "failed"), what="the delivery to fail"
    )
    await page.get_by_role("button", name="Refresh").click()
    item = page.locator(".delivery", has_text=event_id)
    await expect(item.get_by_text("Failed")).to_be_visible()
    await item.get_by_role("button", name=f"Attempts ({failed['attempt_count']})").click()
    attempts = item.locator("table.attempts tbody tr")
    await expect(attempts).to_have_count(failed["attempt_count"])
    await expect(attempts.first.locator("td[data-label='Status code']")).to_have_text("500")
    await expect(attempts.first.locator("td[data-label='Response']")).to_contain_text("nope")
    await expect(attempts.first.locator("td[data-label='Latency']")).to_contain_text(" ms")
    await _shot(page, "delivery-log", only=page.locator("section.log"))

    # Retry it now that the receiver accepts: a new successful attempt on the same delivery.
    receiver.status = 200
    await item.get_by_role("button", name="Retry").click()
    await expect(page.locator(".notice")).to_contain_text("Retrying")
    # The log was reloaded; the focus is back on that delivery, not lost to the page.
    await expect(item.get_by_role("button", name="Attempts")).to_be_focused()
    await eventually(
        lambda: _delivery_of(api, destination_id, "succeeded"), what="the retry to succeed"
    )
    await page.get_by_role("button", name="Refresh").click()
    await expect(item.get_by_text("Succeeded")).to_be_visible()
    await item.get_by_role("button", name="Attempts").click()
    await expect(item.locator("td[data-label='Status code']").last).to_have_text("200")
    assert {r.headers["webhook-id"] for r in receiver.requests} == {failed["id"]}

    # Replay the event to this destination: delivered again, under the same delivery id.
    before = len(receiver.requests)
    await item.get_by_role("button", name="Replay event").click()
    await expect(page.locator(".notice")).to_contain_text("Event replayed")
    await eventually(lambda: len(receiver.requests) > before, what="the replayed event")
    assert receiver.requests[before].headers["webhook-id"] == failed["id"]

    # Rotate the signing secret: the overlap explained, the new secret shown once.
    await page.get_by_role("button", name="Rotate signing secret").click()
    ask = page.get_by_role("dialog", name="Rotate the signing secret?")
    await expect(ask).to_contain_text("24 hours")
    await ask.get_by_role("button", name="Rotate").click()
    rotated = page.get_by_role("dialog", name="New signing secret")
    await expect(rotated.get_by_label("Signing secret")).to_have_value(SECRET)
    assert await rotated.get_by_label("Signing secret").input_value() != first_secret
    await _shot(page, "secret-rotation")
    await rotated.get_by_role("button", name="I have stored it").click()
    await expect(page.locator(".notice")).to_contain_text("rotated")

    # Deliveries signed after the rotation carry both secrets' signatures.
    before = len(receiver.requests)
    await page.get_by_role("button", name="Send test event").click()
    await expect(page.locator(".notice")).to_contain_text("Test event")
    await eventually(lambda: len(receiver.requests) > before, what="the test event")
    test_delivery = receiver.requests[before]
    assert orjson.loads(test_delivery.body)["type"] == "event_destination.test"
    assert len(test_delivery.headers["webhook-signature"].split()) == 2

    # The edit form shows no stored secret, and a 400 lands next to the field it names.
    await page.get_by_role("link", name="Edit").click()
    await expect(page.get_by_label("Secret")).to_have_value("")
    await page.get_by_label("URL").fill("not a url")
    await page.get_by_label("Events").fill("Not An Event Type!")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.locator("#field-webhook-url-error")).to_be_visible()
    await expect(page.locator("#field-events-error")).to_contain_text(
        "item 1: must be an event type"
    )
    await expect(page.get_by_label("URL")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator(".error-summary")).to_contain_text("2 fields need attention")
    _, stored = await api.call("GET", f"/v2/event-destinations/{destination_id}")
    assert stored["webhook"]["url"] == f"{receiver.url}/orders"  # nothing was changed
    await page.evaluate("window.scrollTo(0, 0)")
    await _shot(page, "validation-errors")

    # Corrected, the edit is saved (PATCH); the secret left empty keeps the stored one.
    await page.get_by_label("Name").fill("Orders webhook EU")
    await page.get_by_label("URL").fill(f"{receiver.url}/orders-eu")
    await page.get_by_label("Events").fill(event_type)
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("heading", name="Orders webhook EU")).to_be_visible()
    await expect(page.locator(".notice")).to_contain_text("Saved")
    _, stored = await api.call("GET", f"/v2/event-destinations/{destination_id}")
    assert (stored["name"], stored["webhook"]["url"]) == (
        "Orders webhook EU",
        f"{receiver.url}/orders-eu",
    )

    # The list shows each destination with its status (one the platform made and disabled);
    # then delete ours, after a confirmation whose Cancel has the focus.
    billing = await api.create_webhook(f"{receiver.url}/billing", ["billing.*"], name="Billing")
    assert (await api.call("POST", f"/v2/event-destinations/{billing['id']}/disable"))[0] == 200
    await page.get_by_role("link", name="Destinations").click()
    billing_card = page.locator(".card", has_text="Billing")
    await expect(billing_card.get_by_text("Disabled")).to_be_visible()
    await expect(page.locator(".card", has_text="Orders webhook EU")).to_contain_text("Active")
    await _shot(page, "destinations", only=page.locator("body"))
    await page.get_by_role("link", name="Orders webhook EU").click()
    delete = page.get_by_role("button", name="Delete")
    await delete.click()
    confirm = page.get_by_role("dialog", name="Delete Orders webhook EU?")
    await expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    await page.keyboard.press("Escape")  # closes it, nothing deleted, focus back
    await expect(confirm).to_have_count(0)
    await expect(delete).to_be_focused()
    await page.keyboard.press("Enter")
    await confirm.get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("heading", name="Destinations")).to_be_visible()
    status, _ = await api.call("GET", f"/v2/event-destinations/{destination_id}")
    assert status == 404
    assert page.problems == []  # type: ignore[attr-defined]


async def test_the_form_covers_every_destination_type_of_the_schema(
    customer: Customer, browser: Browser
) -> None:
    """Each type of the spec gets its fields: required ones marked, aliases left out, and
    credentials as password inputs."""
    create = build_spec()["components"]["schemas"]["CreateEventDestinationRequest"]
    page = await _open(browser, customer.url)
    await page.get_by_role("link", name="Add destination").click()
    types = create["properties"]["type"]["enum"]
    for type_name in types:
        await page.get_by_label("Type").select_option(type_name)
        config = create["properties"][type_name]
        section = page.locator("fieldset.config")
        await expect(section.locator("legend")).to_have_text(f"{type_name} settings")
        for name, prop in config["properties"].items():
            field = section.locator(f".field[data-path='{type_name}.{name}']")
            if prop.get("description", "").startswith("Alias of"):
                await expect(field).to_have_count(0)
                continue
            await expect(field.locator("label")).to_be_visible()
            if name in config.get("required", []):
                await expect(field.locator("label")).to_contain_text("(required)")
            if prop.get("writeOnly"):
                await expect(field.locator("input")).to_have_attribute("type", "password")
    assert page.problems == []  # type: ignore[attr-defined]


async def test_another_tenant_or_an_expired_or_forged_token_gets_nothing(
    stack: Stack, platform: Api, customer: Customer, receiver: Receiver, browser: Browser
) -> None:
    ours = await customer.api.create_webhook(
        f"{receiver.url}/ours", ["portal.private"], name="Ours"
    )
    mine = await _open(browser, customer.url)
    await expect(mine.get_by_role("link", name="Ours")).to_be_visible()

    # Another tenant's session: its list lacks ours, and ours by id is not found.
    async with _customer(stack, platform) as other_customer:
        other = await _open(browser, other_customer.url)
        await expect(other.get_by_role("heading", name="Destinations")).to_be_visible()
        await expect(other.get_by_text("No destinations yet")).to_be_visible()
        await other.goto(f"{stack.api_url}/portal/#/d/{ours['id']}")
        await expect(other.get_by_role("heading", name="Not found")).to_be_visible()

    # Signed with the stack's key but expired: the page says so, and the API refuses it.
    expired_token = _signed({"sub": customer.tenant_id, "exp": int(time.time()) - 60})
    expired = await _open(browser, f"{stack.api_url}/portal/#token={expired_token}")
    await expect(expired.get_by_role("heading", name="Session expired")).to_be_visible()
    async with client(stack.api_url, expired_token) as late:
        assert (await late.call("GET", "/v2/event-destinations"))[0] == 401

    # Not expired but signed with another key, claiming a theme: the API answers 401 (the
    # page learns it only from the API); the theme it claims is display only.
    forged_token = _signed(
        {
            "sub": customer.tenant_id,
            "exp": int(time.time()) + 600,
            "return_url": RETURN_URL,
            "theme": THEME,
        },
        key="not-the-stack-signing-key-0123456789abcdef",
    )
    forged = await _open(browser, f"{stack.api_url}/portal/#token={forged_token}")
    await expect(forged.get_by_role("heading", name="Session expired")).to_be_visible()
    await expect(forged.get_by_role("link", name="Back to Acme")).to_be_visible()
    await expect(forged.get_by_text("Ours")).to_have_count(0)
    # No token at all: the page asks for the platform's link and calls nothing.
    bare = await _open(browser, f"{stack.api_url}/portal")  # redirected to /portal/
    await expect(bare.get_by_role("heading", name="No session")).to_be_visible()
    assert urlsplit(bare.url).path == "/portal/"
    for page in (mine, other, expired, forged, bare):
        assert page.problems == []  # type: ignore[attr-defined]


async def test_the_portal_fits_a_360_px_screen(
    customer: Customer, receiver: Receiver, browser: Browser
) -> None:
    api = customer.api
    event_type = f"portal.{new_id('t_').lower()}"
    destination = await api.create_webhook(
        f"{receiver.url}/a-rather-long-path/that/might/overflow", [event_type], name="Phone"
    )
    await api.publish(event_type, {"n": 1})
    await eventually(lambda: _delivery_of(api, destination["id"], "succeeded"), what="the delivery")
    page = await _open(browser, customer.url, viewport=PHONE)
    await expect(page.get_by_role("heading", name="Destinations")).to_be_visible()
    await expect(page.get_by_role("button", name="Show more")).to_be_hidden()  # one page
    await _assert_no_sideways_scroll(page)
    await _shot(page, "destinations-phone")
    await page.get_by_role("link", name="Phone").click()
    await page.get_by_role("button", name="Attempts (1)").click()
    await expect(page.locator("td[data-label='Status code']")).to_have_text("200")
    await _assert_no_sideways_scroll(page)
    await page.get_by_role("link", name="Edit").click()
    await expect(page.get_by_label("URL")).to_be_visible()
    await _assert_no_sideways_scroll(page)

    # A refusal that names no field (the destination was deleted meanwhile) is the summary.
    assert (await api.call("DELETE", f"/v2/event-destinations/{destination['id']}"))[0] == 200
    await page.get_by_role("button", name="Save changes").click()
    summary = page.locator(".error-summary")
    await expect(summary).to_contain_text("No such event destination")
    await expect(summary).to_be_focused()
    await _assert_no_sideways_scroll(page)
    assert page.problems == []  # type: ignore[attr-defined]


async def test_a_destination_herald_disabled_says_why_and_can_be_enabled(
    customer: Customer, receiver: Receiver, browser: Browser
) -> None:
    api = customer.api
    event_type = f"portal.{new_id('t_').lower()}"
    receiver.status = 410  # Gone: Herald disables the destination at once
    destination = await api.create_webhook(f"{receiver.url}/gone", [event_type], name="Gone")
    await api.publish(event_type, {"n": 1})

    async def disabled() -> bool:
        _, body = await api.call("GET", f"/v2/event-destinations/{destination['id']}")
        return bool(body["status"] == "inactive")

    await eventually(disabled, what="the destination to be disabled")
    page = await _open(browser, customer.url)
    card = page.locator(".card", has_text="Gone")
    await expect(card.get_by_text("Auto-disabled")).to_be_visible()
    await expect(card).to_contain_text("Why: ")
    await card.get_by_role("link", name="Gone").click()
    await page.get_by_role("button", name="Enable").click()
    await expect(page.locator(".notice")).to_contain_text("Enabled")
    await expect(page.locator(".page-head .badge")).to_have_text("Pending verification")
    await expect(page.get_by_role("button", name="Disable")).to_be_focused()
    assert page.problems == []  # type: ignore[attr-defined]


async def test_a_content_filter_is_shown_kept_on_edit_and_its_errors_placed(
    customer: Customer, receiver: Receiver, browser: Browser
) -> None:
    """The filter is JSON in the form (not a string map): an edit of another field keeps it,
    a changed one is saved, and a 400 inside it lands next to the Filter field."""
    api = customer.api
    kept = {"data": {"status": "shipped", "total": {"$gte": 100}}}
    destination = await api.create_webhook(
        f"{receiver.url}/filtered", ["order.*"], name="Filtered", filter=kept
    )
    item = f"/v2/event-destinations/{destination['id']}"
    page = await _open(browser, customer.url)
    await page.locator(".card", has_text="Filtered").get_by_role("link", name="Filtered").click()
    await expect(page.locator(".details")).to_contain_text('"$gte":100')
    await page.get_by_role("link", name="Edit").click()
    await page.get_by_label("Name").fill("Filtered EU")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.locator(".notice")).to_contain_text("Saved")
    _, stored = await api.call("GET", item)
    assert (stored["name"], stored["filter"]) == ("Filtered EU", kept)

    await page.get_by_role("link", name="Edit").click()
    await page.get_by_label("Filter", exact=True).fill('{"data": {"total": {"$between": [1, 2]}}}')
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.locator("#field-filter-error")).to_contain_text("$between")
    await page.get_by_label("Filter", exact=True).fill('{"data": {"status": "returned"}}')
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.locator(".notice")).to_contain_text("Saved")
    _, stored = await api.call("GET", item)
    assert stored["filter"] == {"data": {"status": "returned"}}
    assert page.problems == []  # type: ignore[attr-defined]


async def test_a_customer_recovers_what_failed_during_an_outage(
    customer: Customer, receiver: Receiver, browser: Browser
) -> None:
    """Deliveries that ran out of retries while the receiver was down are attempted once
    more from the portal's Recover dialog, under their own delivery ids."""
    api = customer.api
    event_type = f"portal.{new_id('t_').lower()}"
    receiver.status = 500
    destination = await api.create_webhook(f"{receiver.url}/down", [event_type], name="Down")
    first = await api.publish(event_type, {"n": 1})
    failed = await eventually(
        lambda: _delivery_of(api, destination["id"], "failed"), what="the delivery to fail"
    )
    receiver.status = 200
    before = len(receiver.requests)
    page = await _open(browser, customer.url)
    await page.locator(".card", has_text="Down").get_by_role("link", name="Down").click()
    await page.get_by_role("button", name="Recover failed deliveries").click()
    ask = page.get_by_role("dialog", name="Recover failed deliveries")
    await expect(ask.get_by_label("Failed since")).not_to_have_value("")
    await ask.get_by_role("button", name="Recover").click()
    await expect(page.locator(".notice")).to_contain_text("1 failed delivery is attempted again")
    await expect(page.get_by_role("button", name="Recover failed deliveries")).to_be_focused()
    await eventually(
        lambda: _delivery_of(api, destination["id"], "succeeded"), what="the recovered delivery"
    )
    recovered = receiver.requests[before:]
    assert [r.headers["webhook-id"] for r in recovered] == [failed["id"]]
    assert orjson.loads(recovered[0].body)["id"] == first
    assert page.problems == []  # type: ignore[attr-defined]


async def test_the_delivery_log_filters_and_pages(
    customer: Customer, receiver: Receiver, browser: Browser
) -> None:
    api = customer.api
    event_type = f"portal.{new_id('t_').lower()}"
    destination = await api.create_webhook(f"{receiver.url}/many", [event_type], name="Many")
    published = [await api.publish(event_type, {"n": n}) for n in range(LOG_PAGE + 1)]
    path = f"/v2/event-destinations/{destination['id']}/event-deliveries?limit=100"

    async def all_succeeded() -> bool:
        _, page = await api.call("GET", path)
        return [d["status"] for d in page["data"]] == ["succeeded"] * len(published)

    await eventually(all_succeeded, what="every delivery to succeed")
    page = await _open(browser, customer.url)
    await page.get_by_role("link", name="Many").click()
    items, older, newer = (
        page.locator(".delivery"),
        page.get_by_role("button", name="Older"),
        page.get_by_role("button", name="Newer"),
    )
    await expect(items).to_have_count(LOG_PAGE)
    await expect(newer).to_be_disabled()
    shown = await items.all_inner_texts()
    await older.click()
    await expect(items).to_have_count(1)
    await expect(page.get_by_text("Page 2")).to_be_visible()
    shown += await items.all_inner_texts()
    # Every delivery on exactly one of the two pages.
    assert sorted(e for e in published for text in shown if e in text) == sorted(published)
    await expect(older).to_be_disabled()
    await newer.click()
    await expect(items).to_have_count(LOG_PAGE)

    filters = page.get_by_role("form", name="Filter deliveries")
    await filters.get_by_label("Status").select_option("failed")
    await filters.get_by_role("button", name="Apply filters").click()
    await expect(page.get_by_text("No deliveries match.")).to_be_visible()
    await filters.get_by_label("Status").select_option("succeeded")
    await filters.get_by_label("Event type").fill(event_type)
    await filters.get_by_role("button", name="Apply filters").click()
    await expect(items).to_have_count(LOG_PAGE)
    await filters.get_by_label("From").fill("2099-01-01T00:00")
    await filters.get_by_role("button", name="Apply filters").click()
    await expect(page.get_by_text("No deliveries match.")).to_be_visible()
    await filters.get_by_role("button", name="Clear").click()
    await expect(items).to_have_count(LOG_PAGE)
    assert page.problems == []  # type: ignore[attr-defined]


async def _assert_no_sideways_scroll(page: Page) -> None:
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{overflow} px of horizontal scroll at {page.url}"


async def test_portal_redirects_and_serves_its_files_without_a_key(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stack.api_url}/portal", allow_redirects=False) as response:
            assert response.status == 301
            assert response.headers["Location"] == "/portal/"
        async with session.get(f"{stack.api_url}/portal/app.js") as response:
            assert response.status == 200
            assert response.content_type == "text/javascript"
            assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        async with session.get(f"{stack.api_url}/portal/..%2Fapp.py") as response:
            assert response.status == 404
