"""The portal's delivery chart (issue 18, part 3) in a real browser: Debian's chromium driven
by Playwright against the test stack, after real deliveries to a real receiver that accepts
some events and refuses others. The chart, its description and its table alternative must
show the counts the API has, in every range, and fit a 360 px screen without sideways
scrolling. Helpers and the customer (a tenant with a portal session) are test_portal.py's;
with HERALD_PORTAL_SCREENSHOTS set, it saves the chart the README shows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, expect

from tests.integration.api_client import Api
from tests.integration.conftest import Stack
from tests.integration.test_portal import (
    DESKTOP,
    PHONE,
    Customer,
    _assert_no_sideways_scroll,
    _customer,
    _open,
    _shot,
)
from tests.integration.test_stats import AnsweringReceiver
from tests.support import eventually

SUCCEEDING = 3
FAILING = 1  # refused until it runs out of retries (about 1.5 s on the test stack)


@pytest.fixture
async def customer(stack: Stack, platform: Api) -> AsyncIterator[Customer]:
    async with _customer(stack, platform) as made:
        yield made


@pytest.fixture
async def answering() -> AsyncIterator[AnsweringReceiver]:
    server = await AnsweringReceiver().start()
    yield server
    await server.stop()


async def _table_counts(page: Page) -> tuple[int, int]:
    """(succeeded, failed) summed over the rows of the chart's table."""
    table = page.locator("table.stats-table")
    succeeded = await table.locator("td[data-label='Succeeded']").all_inner_texts()
    failed = await table.locator("td[data-label='Failed']").all_inner_texts()
    return sum(map(int, succeeded)), sum(map(int, failed))


async def _destination_page(
    browser: Browser, customer: Customer, viewport: dict[str, int] = DESKTOP
) -> Page:
    page = await _open(browser, customer.url, viewport)
    await page.locator(".card", has_text="Charted").get_by_role("link", name="Charted").click()
    await expect(page.get_by_role("heading", name="Deliveries over time")).to_be_visible()
    return page


async def test_the_chart_shows_real_deliveries(
    customer: Customer, answering: AnsweringReceiver, browser: Browser
) -> None:
    api = customer.api
    destination = await api.create_webhook(f"{answering.url}/chart", ["chart.*"], name="Charted")
    for _ in range(SUCCEEDING):
        await api.publish("chart.ok", {"answer": "ok", "delay_ms": 0})
    for _ in range(FAILING):
        await api.publish("chart.bad", {"answer": "bad"})
    stats_path = f"/v2/event-destinations/{destination['id']}/stats"

    async def finished() -> bool:
        _, body = await api.call("GET", stats_path)
        deliveries = body["totals"]["deliveries"]
        return (deliveries["succeeded"], deliveries["failed"]) == (SUCCEEDING, FAILING)

    await eventually(finished, timeout_s=60, what="every delivery finished and indexed")

    page = await _destination_page(browser, customer)
    expected = f"{SUCCEEDING} succeeded, {FAILING} failed, success rate 75.0 %"
    await expect(page.locator(".stats-summary")).to_contain_text(expected)
    await expect(page.get_by_role("button", name="24 h")).to_have_attribute("aria-pressed", "true")
    chart = page.get_by_role("img", name="Deliveries that succeeded and failed")
    await expect(chart).to_be_visible()
    await expect(chart.locator("desc")).to_contain_text(expected)
    # One bar per bucket with a finished delivery (two if the test crossed an hour), each
    # titled with its counts, and the table alternative has the same numbers.
    await page.get_by_text("Show as a table").click()
    assert await _table_counts(page) == (SUCCEEDING, FAILING)
    rows = await page.locator("table.stats-table tbody tr").count()
    await expect(chart.locator("g.bar")).to_have_count(rows)
    await expect(chart.locator("g.bar title").first).to_contain_text("succeeded")
    heights = await chart.locator("rect.bar-failed").evaluate_all(
        "rects => rects.map(r => Number(r.getAttribute('height')))"
    )
    assert sum(1 for h in heights if h > 0) >= 1  # the failure is drawn, not only counted
    await _shot(page, "delivery-chart", only=page.locator("section.stats"))

    # The other ranges show the same deliveries (30 d in day buckets).
    for label in ("7 d", "30 d"):
        await page.get_by_role("button", name=label).click()
        # Pressed once its range is drawn.
        await expect(page.get_by_role("button", name=label)).to_have_attribute(
            "aria-pressed", "true"
        )
        await expect(page.locator(".stats-summary")).to_contain_text(expected)
        await page.get_by_text("Show as a table").click()
        assert await _table_counts(page) == (SUCCEEDING, FAILING)
    assert page.problems == []  # type: ignore[attr-defined]

    phone = await _destination_page(browser, customer, PHONE)
    await expect(phone.locator(".stats-summary")).to_contain_text(expected)
    await phone.get_by_text("Show as a table").click()
    await _assert_no_sideways_scroll(phone)
    assert phone.problems == []  # type: ignore[attr-defined]
