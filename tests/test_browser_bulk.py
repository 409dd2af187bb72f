"""In real Chromium: an operator filters the list, selects every scan matching the filter across pages, archives
them, and takes it back with Undo; an empty "Set label" is refused; a user in no group gets one clear page."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import Page, expect

from scans.models import Scan
from tests import test_browser
from tests.factories import make_refreshed_scan, make_scan

# The browser, role groups, fast polling and page fixtures are the browser tests' own.
browser = test_browser.browser
page = test_browser.page
_roles = test_browser._roles
_fast_polling = test_browser._fast_polling
log_in = test_browser.log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def messages(page: Page):
    """The list of messages an action leaves on the page it returns to."""
    return page.locator("ul.messages")


@pytest.fixture
def thirty_failed_and_some_fine() -> None:
    now = timezone.now()
    for n in range(30):
        make_scan(
            f"fail-{n:03d}", status=Scan.Status.FAILED, submitted_at=now - timedelta(minutes=n), next_check_at=None
        )
    for n in range(5):
        make_refreshed_scan(f"fine-{n:03d}", Scan.Status.SUCCESS)


def test_select_all_matching_archives_every_page_of_the_filter_and_undo_takes_it_back(
    page: Page, operator, thirty_failed_and_some_fine
):
    log_in(page, "olivia")
    page.goto("/?per=25")
    # The filter is chosen in place (htmx): the strip and the form's way back must follow it.
    page.locator("nav.chips a.chip-failed").click()
    expect(page).to_have_url(re.compile(r"status=FAILED"))
    expect(page.locator("#scan-table tbody tr")).to_have_count(25)
    strip = page.locator("[data-select-matching]")
    expect(strip).to_be_hidden()

    page.locator("[data-select-all]").check()
    expect(strip).to_be_visible()
    expect(strip).to_contain_text("All 25 scans on this page are selected.")
    strip.get_by_role("button", name="Select all 30 scans matching these filters").click()
    expect(strip).to_contain_text("All 30 scans matching these filters are selected (at most 10,000 per action).")
    expect(page.locator("#bulk-form [data-selected-count]")).to_have_text("All 30 matching")
    page.get_by_role("button", name="Archive (stop tracking)").click()

    undo = page.locator("[data-archive-undo]")
    expect(undo).to_contain_text("Archived 30 scan(s): they are no longer polled.")
    expect(undo).to_be_visible()
    # Back on the list as it was when the button was pressed, not as it was first loaded.
    assert parse_qs(urlsplit(page.url).query) == {"status": ["FAILED"], "per": ["25"]}
    assert Scan.objects.archived().count() == 30
    expect(page.locator("#scan-table tbody tr")).to_have_count(1)  # the empty-list row

    undo.get_by_role("button", name="Undo").click()

    expect(messages(page)).to_contain_text("Undone: 30 scan(s) are tracked again.")
    expect(page.locator("#scan-table tbody tr")).to_have_count(25)
    assert Scan.objects.archived().count() == 0


def test_unticking_a_row_goes_back_to_acting_on_the_ticked_rows(page: Page, operator, thirty_failed_and_some_fine):
    log_in(page, "olivia")
    page.goto("/?status=FAILED&per=25")
    page.locator("[data-select-all]").check()
    page.get_by_role("button", name="Select all 30 scans matching these filters").click()

    page.locator("#scan-table input.row-select").first.uncheck()

    expect(page.locator("[data-select-matching]")).to_be_hidden()
    expect(page.locator("#bulk-form [data-selected-count]")).to_have_text("24")
    # The bar's own "Select all on this page" (the only one a phone's cards have) brings the offer back.
    page.get_by_role("button", name="Select all on this page").click()
    expect(page.locator("#bulk-form [data-selected-count]")).to_have_text("25")
    expect(page.get_by_role("button", name="Select all 30 scans matching these filters")).to_be_visible()
    expect(page.get_by_role("button", name="Select all on this page")).to_be_hidden()
    page.locator("#scan-table input.row-select").first.uncheck()
    page.get_by_role("button", name="Refresh now").click()
    expect(messages(page)).to_contain_text("None of the selected scans changed.")
    page.locator("[data-select-all]").check()
    page.locator("#scan-table input.row-select").first.uncheck()
    page.locator("#bulk-label").fill("checked")
    page.get_by_role("button", name="Set label", exact=True).click()
    expect(messages(page)).to_contain_text("Label set on 24 scan(s).")
    assert Scan.objects.filter(label="checked").count() == 24


def test_an_empty_label_is_refused_and_clear_label_clears(page: Page, operator):
    make_refreshed_scan("47882682-9f38-4f45-afec-daadaa1b230b", Scan.Status.FAILED, label="Q4 audit")
    log_in(page, "olivia")

    page.locator("input.row-select").check()
    page.locator("#bulk-label").press("Enter")  # Set label, with nothing typed

    expect(messages(page)).to_contain_text("Type a label, or use Clear label.")
    assert Scan.objects.get().label == "Q4 audit"
    page.locator("input.row-select").check()
    page.get_by_role("button", name="Clear label").click()
    expect(messages(page)).to_contain_text("Label cleared on 1 scan(s).")
    assert Scan.objects.get().label == ""


def test_a_user_in_no_group_sees_one_page_that_says_what_to_ask_for_and_logs_out(page: Page, live_server):
    get_user_model().objects.create_user("nora", password="pw-nora-1")
    page.goto("/login/")
    page.fill("#id_username", "nora")
    page.fill("#id_password", "pw-nora-1")
    page.get_by_role("button", name="Log in", exact=True).click()

    expect(page.get_by_role("heading", name="No access yet")).to_be_visible()
    expect(page.locator("main")).to_contain_text("ask an administrator to add you to Viewers or Operators")
    expect(page.locator(".role")).to_have_count(0)
    expect(page.get_by_role("link", name="Alerts")).to_have_count(0)
    page.goto("/alerts/")
    expect(page.get_by_role("heading", name="No access yet")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{live_server.url}/login/")
