"""In real Chromium: an operator snoozes alerts in their own time zone, every page then says so, "End now" ends it;
on a phone the banner costs the list one short line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from scans.alerts import alerts_snooze
from scans.models import AlertSnooze, Scan
from tests import test_browser
from tests.factories import make_refreshed_scan

# The browser, role groups, fast polling and page fixtures are the browser tests' own.
browser = test_browser.browser
_roles = test_browser._roles
_fast_polling = test_browser._fast_polling
log_in = test_browser.log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ZONE = "Europe/Berlin"
# One line of the banner's 13 px text with its padding; a second line would take it past this.
ONE_SHORT_LINE_PX = 36


@pytest.fixture
def berlin_page(browser: Browser, live_server) -> Iterator[Page]:
    """A page in a browser whose clock is in Berlin; any uncaught JavaScript error fails the test."""
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 1280, "height": 900}, timezone_id=ZONE
    )
    context.set_default_timeout(test_browser.LIVE_TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_an_operator_snoozes_in_their_zone_sees_the_banner_everywhere_and_ends_it(berlin_page: Page, operator):
    page = berlin_page
    make_refreshed_scan("47882682-9f38-4f45-afec-daadaa1b230b", Scan.Status.FAILED, error="Quota exceeded")
    log_in(page, "olivia")
    assert {"name": "tz", "value": ZONE} in [
        {"name": cookie["name"], "value": cookie["value"]} for cookie in page.context.cookies()
    ]

    page.goto("/alerts/settings/")
    expect(page.get_by_label(f"Until ({ZONE})")).to_be_visible()
    page.get_by_label("For 4 hours").check()
    page.get_by_label("Reason").fill("DB upgrade")
    page.get_by_role("button", name="Snooze", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="All alerts are snoozed until")).to_be_visible()

    page.goto("/")
    banner = page.locator('[data-maintenance="active"]')
    expect(banner).to_contain_text("Alerts snoozed until")
    expect(banner).to_contain_text("by olivia: DB upgrade")
    # On the viewer's clock: the cookie timezone.js set, read by the server.
    expect(banner.locator("time")).to_have_text(_on_berlin_clock(AlertSnooze.objects.get().until))
    expect(page.locator("#scan-table tbody tr")).to_have_count(1)

    banner.get_by_role("button", name="End now").click()

    expect(page.get_by_text("Snooze ended: alerts are on again.")).to_be_visible()
    expect(page).to_have_url(re.compile(r"^http://[^/]+/$"))  # back on the list, where End now was clicked
    expect(page.locator('[data-maintenance="active"]')).to_have_count(0)
    assert AlertSnooze.objects.get().ended_at is not None


def _on_berlin_clock(moment: datetime) -> str:
    """How the banner names a time within a day: "today 20:00 CET" or "tomorrow 00:30 CET" on Berlin's clock."""
    local, today = moment.astimezone(ZoneInfo(ZONE)), timezone.now().astimezone(ZoneInfo(ZONE)).date()
    day = "today" if local.date() == today else "tomorrow"
    return f"{day} {local:%H:%M} {local.tzname()}"


def test_a_typed_custom_time_picks_custom_and_is_read_in_the_viewers_zone(berlin_page: Page, operator):
    page = berlin_page
    log_in(page, "olivia")
    page.goto("/alerts/settings/")
    start = (timezone.now() + timedelta(days=2)).astimezone(ZoneInfo(ZONE))
    start = start.replace(hour=22, minute=0, second=0, microsecond=0)
    end = start + timedelta(hours=3)

    page.get_by_label(f"From ({ZONE})").fill(f"{start:%Y-%m-%dT%H:%M}")
    page.get_by_label(f"Until ({ZONE})").fill(f"{end:%Y-%m-%dT%H:%M}")
    expect(page.get_by_label("Custom")).to_be_checked()
    page.get_by_role("button", name="Snooze", exact=True).click()

    expect(page.locator('[data-maintenance="scheduled"]')).to_contain_text("Maintenance scheduled")
    snooze = AlertSnooze.objects.get()
    assert (snooze.starts_at, snooze.until) == (start, end)
    expect(page.locator('[data-maintenance="active"]')).to_have_count(0)


def test_on_a_phone_the_banner_pushes_the_list_down_by_one_short_line_at_most(
    browser: Browser, live_server, operator
):
    for n in range(3):
        make_refreshed_scan(f"scan-{n}", Scan.Status.SUCCESS)
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 390, "height": 844}, timezone_id=ZONE
    )
    context.set_default_timeout(test_browser.LIVE_TIMEOUT_MS)
    page = context.new_page()
    try:
        log_in(page, "olivia")
        table_top_without = _table_top(page)

        reason = "Protecto tenant migration to the new region, expect failed and stuck scans until it is done"
        alerts_snooze(until=timezone.now() + timedelta(hours=4), reason=reason, user=operator)
        pushed = _table_top(page) - table_top_without
        banner = page.locator('[data-maintenance="active"]')
        expect(banner).to_contain_text("Alerts snoozed until")
        expect(banner.get_by_role("button", name="End now")).to_be_visible()

        assert 0 < pushed <= ONE_SHORT_LINE_PX, pushed
        assert banner.bounding_box()["height"] <= ONE_SHORT_LINE_PX
        # Cut on screen, whole for a pointer's title and for screen readers.
        assert reason in banner.locator(".maintenance-text").get_attribute("title")
        assert reason in banner.locator(".maintenance-text").text_content()
    finally:
        context.close()


def _table_top(page: Page) -> float:
    """Where the list's table starts, once the summary above it has loaded (it arrives just after the page)."""
    page.goto("/")
    expect(page.locator("#live-header.stats-loading")).to_have_count(0)
    expect(page.locator("#live-header")).to_contain_text("Failure rate")
    return page.locator("#scan-table").bounding_box()["y"]
