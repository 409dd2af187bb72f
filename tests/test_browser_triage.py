"""In real Chromium: an operator sees a failure grouped on the Problems page, acknowledges the group with a note,
sees it leave the page and the navigation's red count, and finds the acknowledgement in the audit log and on the
scan's page."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from scans.models import Scan
from tests import test_browser
from tests.factories import make_refreshed_scan

# The browser, role groups, fast polling and page fixtures are the browser tests' own.
browser = test_browser.browser
page = test_browser.page
_roles = test_browser._roles
_fast_polling = test_browser._fast_polling
log_in = test_browser.log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FAILED_ID = "47882682-9f38-4f45-afec-daadaa1b230b"
OTHER_ID = "5d1c0e3a-7b7e-4d0b-9d69-0c2b8e1f4a11"
DENIED = "Permission denied reading object <path>"


def test_an_operator_acknowledges_a_failure_group_and_finds_it_in_the_audit_log(page: Page, operator):
    make_refreshed_scan(
        FAILED_ID, Scan.Status.FAILED, label="HR share audit", error="Permission denied reading object HR/a.csv"
    )
    make_refreshed_scan(OTHER_ID, Scan.Status.FAILED, label="Payroll EU", error="Quota exceeded")
    log_in(page, "olivia")

    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Problems")).to_contain_text("2")
    nav.get_by_role("link", name="Problems").click()
    expect(page.get_by_role("heading", name="Problems", level=1)).to_be_visible()
    group = page.locator("li.problem-group").filter(has_text=DENIED)
    expect(group).to_contain_text("HR share audit")

    group.get_by_placeholder("Note, e.g. ticket OPS-123").fill("ticket OPS-123")
    group.get_by_role("button", name="Acknowledge 1").click()

    expect(page.get_by_role("status")).to_contain_text("Acknowledged 1 scan(s)")
    expect(page.locator("li.problem-group").filter(has_text=DENIED)).to_have_count(0)
    expect(page.locator("li.problem-group").filter(has_text="Quota exceeded")).to_have_count(1)
    expect(nav.get_by_role("link", name="Problems")).to_contain_text("1")

    nav.get_by_role("link", name="Audit").click()
    row = page.locator("table.audit tbody tr").first
    expect(row).to_contain_text("olivia")
    expect(row).to_contain_text("Acknowledge")
    expect(row).to_contain_text(f"group: {DENIED}; note: ticket OPS-123")

    row.get_by_role("link").click()
    expect(page.locator("[data-ack]")).to_have_text("Acknowledged by olivia: ticket OPS-123")
    expect(page.locator(".audit-timeline li").first).to_contain_text("Acknowledge by olivia")


def test_a_failure_group_link_opens_the_list_filtered_to_that_error(page: Page, operator):
    make_refreshed_scan(FAILED_ID, Scan.Status.FAILED, error="Permission denied reading object HR/a.csv")
    make_refreshed_scan(OTHER_ID, Scan.Status.FAILED, error="Quota exceeded")
    log_in(page, "olivia")

    page.goto("/problems/")
    page.locator("li.problem-group").filter(has_text=DENIED).get_by_role("link").click()

    rows = test_browser.table_rows(page)
    expect(rows).to_have_count(1)
    expect(rows.first.locator(f'a[href="/scans/{FAILED_ID}/"]').first).to_be_visible()
    expect(page.locator("[data-error-filter]")).to_contain_text(DENIED)
