"""The dashboard in real Chromium against a live server: log in, filter, search, live updates, actions, roles."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import timedelta
from importlib import import_module

import pytest
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from scans.models import Scan
from scans.refresh import scans_refresh_due
from scans.services import scans_track
from tests.chromium import CHROMIUM, launch_chromium
from tests.conftest import require_service
from tests.factories import make_refreshed_scan

pytestmark = [
    pytest.mark.browser,
    # The live server answers from another thread, so the tests' data must be committed.
    pytest.mark.django_db(transaction=True),
]

# Long enough for a 1 s poll, the 300 ms search delay and a busy CI machine; failures still show up quickly.
LIVE_TIMEOUT_MS = 8000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module; every test gets its own context (cookies, storage)."""
    if not CHROMIUM.exists():
        require_service(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with pytest.MonkeyPatch.context() as patch:
        # Playwright's sync API keeps an asyncio loop running in this thread, and Django then refuses the
        # tests' plain synchronous ORM calls as if they came from async code.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = launch_chromium(playwright)
            yield chromium
            chromium.close()


@functools.cache
def _roles_migration_apps():
    return MigrationLoader(None, ignore_no_migrations=True).project_state(("scans", "0002_roles")).apps


@pytest.fixture(autouse=True)
def _roles(transactional_db) -> None:
    """Make the Viewers and Operators groups again with the roles migration's own code.

    The flush after each transactional test empties them. serialized_rollback cannot bring them back here: once
    Playwright's event loop runs in this thread, Django hands the tests a different connection object from the
    one that holds the serialized data.
    """
    import_module("scans.migrations.0002_roles").create_roles(_roles_migration_apps(), None)


@pytest.fixture(autouse=True)
def _fast_polling(settings) -> None:
    settings.DASHBOARD_POLL_SECONDS = 1


@pytest.fixture
def page(browser: Browser, live_server) -> Iterator[Page]:
    """A fresh page on the live server; any uncaught JavaScript error fails the test."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(LIVE_TIMEOUT_MS)
    new_page = context.new_page()
    errors: list[str] = []
    new_page.on("pageerror", lambda error: errors.append(str(error)))
    yield new_page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def log_in(page: Page, username: str) -> None:
    """Log in through the real form with the password the role fixtures give."""
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"pw-{username}-1")
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def table_rows(page: Page) -> Locator:
    return page.locator("#scan-table tbody tr")


def row_for(page: Page, tracking_id: str) -> Locator:
    return table_rows(page).filter(has=page.get_by_role("link", name=tracking_id, exact=True))


def status_badge(row: Locator) -> Locator:
    return row.locator("span.badge").first


def mark_page(page: Page) -> None:
    """Tag the current document: the tag survives htmx swaps and vanishes on any reload or navigation."""
    page.evaluate("window.__marker = 1")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"


def test_a_wrong_password_is_refused_the_right_one_opens_the_dashboard_and_logout_ends_it(
    page: Page, operator, live_server
):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))

    page.fill("#id_username", "olivia")
    page.fill("#id_password", "not-the-password")
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("didn't match")
    expect(page.locator("#id_username")).to_have_value("olivia")

    page.fill("#id_password", "pw-olivia-1")
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.locator(".who")).to_have_text("olivia")
    expect(page.get_by_role("region", name="Scans")).to_contain_text("No scans tracked yet")

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{live_server.url}/login/")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))


def test_a_status_chip_filters_the_table_in_place_and_back_returns_to_all(page: Page, operator, live_server):
    make_refreshed_scan("47882682-9f38-4f45-afec-daadaa1b230b", Scan.Status.FAILED, error="Quota exceeded")
    make_refreshed_scan("0b6a3f7e-51c2-4d0e-9a11-3c2f7d9e8b10", Scan.Status.FAILED, error="Permission denied")
    make_refreshed_scan("9e1d2c3b-4a5f-4e6d-8c7b-6a5f4e3d2c1b", Scan.Status.SUCCESS)
    make_refreshed_scan("5d41402a-bc4b-4a76-b971-9d911017c592", Scan.Status.PENDING)
    log_in(page, "olivia")
    expect(table_rows(page)).to_have_count(4)
    mark_page(page)

    page.locator(".chips .chip-failed").click()

    expect(page).to_have_url(f"{live_server.url}/?status=FAILED")
    expect(table_rows(page)).to_have_count(2)
    expect(table_rows(page).locator("span.badge")).to_have_text(["Failed", "Failed"])
    expect(page.locator(".chips .chip-failed")).to_have_attribute("aria-current", "true")
    assert_not_reloaded(page)

    page.go_back()

    expect(page).to_have_url(f"{live_server.url}/")
    expect(table_rows(page)).to_have_count(4)
    expect(page.locator(".chips .chip-all")).to_have_attribute("aria-current", "true")


def test_back_from_a_scan_page_to_a_filtered_list_shows_the_whole_styled_page(page: Page, operator, live_server):
    make_refreshed_scan("47882682-9f38-4f45-afec-daadaa1b230b", Scan.Status.FAILED, error="Quota exceeded")
    make_refreshed_scan("9e1d2c3b-4a5f-4e6d-8c7b-6a5f4e3d2c1b", Scan.Status.SUCCESS)
    log_in(page, "olivia")
    page.locator(".chips .chip-failed").click()
    expect(page).to_have_url(f"{live_server.url}/?status=FAILED")
    expect(table_rows(page)).to_have_count(1)

    page.get_by_role("link", name="47882682-9f38-4f45-afec-daadaa1b230b", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("47882682")
    page.go_back()

    # The browser's cache holds the table fragment htmx fetched for this URL; only Vary: HX-Request keeps it
    # from being shown as the page.
    expect(page).to_have_url(f"{live_server.url}/?status=FAILED")
    expect(page.locator("header.topbar")).to_be_visible()
    expect(page.locator("#filters")).to_be_visible()
    expect(table_rows(page)).to_have_count(1)
    assert page.evaluate("getComputedStyle(document.body).margin") == "0px", "the stylesheet is not applied"


def test_searching_part_of_an_id_filters_in_place_and_a_pasted_full_id_opens_its_page(
    page: Page, operator, live_server
):
    make_refreshed_scan("47882682-9f38-4f45-afec-daadaa1b230b", Scan.Status.FAILED, label="Nightly CRM sweep")
    make_refreshed_scan("c0ffee12-3a4b-4c5d-8e9f-0123456789ab", Scan.Status.SUCCESS, label="HR share audit")
    make_refreshed_scan("5d41402a-bc4b-4a76-b971-9d911017c592", Scan.Status.PENDING, label="Nightly CRM sweep")
    log_in(page, "olivia")
    expect(table_rows(page)).to_have_count(3)
    mark_page(page)

    page.locator("#q").fill("afec-daa")

    expect(table_rows(page)).to_have_count(1)
    expect(row_for(page, "47882682-9f38-4f45-afec-daadaa1b230b")).to_be_visible()
    expect(page).to_have_url(re.compile(r"[?&]q=afec-daa(&|$)"))

    page.locator("#q").fill("crm sweep")

    expect(table_rows(page)).to_have_count(2)
    assert_not_reloaded(page)

    page.locator("#q").fill("c0ffee12-3a4b-4c5d-8e9f-0123456789ab")

    expect(page).to_have_url(f"{live_server.url}/scans/c0ffee12-3a4b-4c5d-8e9f-0123456789ab/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("c0ffee12-3a4b-4c5d-8e9f-0123456789ab")


def test_a_status_change_appears_without_reloading_the_page(page: Page, operator, simulator, protecto_settings):
    simulator.add_scan("3f9c2a71-live-4e0b-9d2a-7c1e5b8a0f01", status="IN-PROGRESS")
    simulator.add_scan("3f9c2a71-live-4e0b-9d2a-7c1e5b8a0f02", status="PENDING")
    scans_track(ids=["3f9c2a71-live-4e0b-9d2a-7c1e5b8a0f01", "3f9c2a71-live-4e0b-9d2a-7c1e5b8a0f02"])
    scans_refresh_due()
    log_in(page, "olivia")
    changing = row_for(page, "3f9c2a71-live-4e0b-9d2a-7c1e5b8a0f01")
    expect(status_badge(changing)).to_have_text("In progress")
    expect(page.locator(".chips .chip-failed .chip-count")).to_have_text("0")
    mark_page(page)

    simulator.set_status("3f9c2a71-live-4e0b-9d2a-7c1e5b8a0f01", "FAILED", error_msg="Quota exceeded")
    scans_refresh_due(now=timezone.now() + timedelta(minutes=1))

    expect(status_badge(changing)).to_have_text("Failed")
    expect(changing.locator(".error-cell")).to_have_text("Quota exceeded")
    expect(page.locator(".chips .chip-failed .chip-count")).to_have_text("1")
    expect(status_badge(row_for(page, "3f9c2a71-live-4e0b-9d2a-7c1e5b8a0f02"))).to_have_text("Pending")
    assert_not_reloaded(page)


def test_the_scan_page_opened_from_the_table_shows_its_timeline_and_error(
    page: Page, operator, simulator, protecto_settings, live_server
):
    tracking_id = "8d7c6b5a-4f3e-4d2c-9b1a-0f9e8d7c6b5a"
    start = timezone.now() - timedelta(minutes=10)
    simulator.add_scan(tracking_id, status="PENDING", data_source="salesforce")
    scans_track(ids=[tracking_id], label="Nightly CRM sweep", now=start)
    scans_refresh_due(now=start)
    simulator.set_status(tracking_id, "IN-PROGRESS")
    scans_refresh_due(now=start + timedelta(minutes=1))
    error = "Permission denied reading object CustomerDB/Customerstable\nrole 'scanner' lacks SELECT"
    simulator.set_status(tracking_id, "FAILED", error_msg=error)
    scans_refresh_due(now=start + timedelta(minutes=3))
    log_in(page, "olivia")

    page.get_by_role("link", name=tracking_id, exact=True).click()

    expect(page).to_have_url(f"{live_server.url}/scans/{tracking_id}/")
    steps = page.locator("ol.timeline > li")
    expect(steps.locator(".badge")).to_have_text(["Pending", "In progress", "Failed"])
    expect(steps.nth(0)).to_contain_text("for 1m 00s")
    expect(steps.nth(1)).to_contain_text("for 2m 00s")
    expect(steps.nth(2)).to_contain_text("final")
    expect(page.locator(".error-box pre")).to_have_text(error)
    expect(page.locator(".detail-status")).to_contain_text("Final: no longer polled.")


def test_an_operator_pastes_ids_and_sees_what_became_of_each(
    page: Page, operator, simulator, protecto_settings, settings
):
    # The refresh the page asks for runs inside the request, against the simulator, instead of being queued.
    settings.CELERY_TASK_ALWAYS_EAGER = True
    simulator.add_scan("e4d3c2b1-new0-4a5b-8c7d-112233445566", status="IN-PROGRESS")
    make_refreshed_scan("a1b2c3d4-old0-4e5f-8a9b-665544332211", Scan.Status.SUCCESS)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, "olivia")
    page.get_by_role("link", name="Add scans").click()

    page.fill(
        "#id_ids",
        "e4d3c2b1-new0-4a5b-8c7d-112233445566\na1b2c3d4-old0-4e5f-8a9b-665544332211\n<script>alert(1)</script>",
    )
    page.fill("#id_label", "Q4 PII audit")
    page.get_by_role("button", name="Add and refresh").click()
    # A rejected entry means a preview first; it lists the entry with its reason before anything is added.
    preview = page.get_by_role("region", name="Preview")
    expect(preview).to_contain_text("1 to add, 1 already tracked, 0 repeated in this paste, 1 rejected")
    assert not Scan.objects.filter(tracking_id="e4d3c2b1-new0-4a5b-8c7d-112233445566").exists()
    preview.get_by_role("button", name="Add 1 scan").click()

    results = page.get_by_role("region", name="Results")
    expect(results.get_by_role("heading")).to_have_text("1 added, 1 already tracked, 0 repeated, 1 rejected")
    result_rows = results.locator("tbody tr")
    expect(result_rows.filter(has_text="e4d3c2b1-new0-4a5b-8c7d-112233445566")).to_contain_text("Added")
    expect(result_rows.filter(has_text="a1b2c3d4-old0-4e5f-8a9b-665544332211")).to_contain_text("Already tracked")
    rejected = result_rows.filter(has_text="<script>alert(1)</script>")
    expect(rejected).to_contain_text("Rejected")
    expect(rejected).to_contain_text(
        "contains '(', ')', '/', '<', '>'; only letters, digits, '-' and '_' are allowed"
    )
    expect(results.locator("script")).to_have_count(0)
    page.wait_for_load_state("load")
    assert dialogs == []
    added = Scan.objects.get(tracking_id="e4d3c2b1-new0-4a5b-8c7d-112233445566")
    assert (added.label, added.status) == ("Q4 PII audit", Scan.Status.IN_PROGRESS)


def test_an_operator_sets_a_label_on_two_selected_rows(page: Page, operator):
    make_refreshed_scan("47882682-9f38-4f45-afec-daadaa1b230b", Scan.Status.FAILED)
    make_refreshed_scan("c0ffee12-3a4b-4c5d-8e9f-0123456789ab", Scan.Status.IN_PROGRESS)
    make_refreshed_scan("5d41402a-bc4b-4a76-b971-9d911017c592", Scan.Status.PENDING)
    log_in(page, "olivia")
    bulk = page.locator("#bulk-form")
    expect(bulk).to_be_hidden()

    row_for(page, "47882682-9f38-4f45-afec-daadaa1b230b").locator("input.row-select").check()
    row_for(page, "c0ffee12-3a4b-4c5d-8e9f-0123456789ab").locator("input.row-select").check()
    expect(bulk).to_be_visible()
    expect(bulk.locator("[data-selected-count]")).to_have_text("2")
    bulk.locator("#bulk-label").fill("Warehouse PII check")
    bulk.locator("#bulk-label").press("Enter")  # the first button of the bar is Set label

    expect(page.locator(".message-success")).to_have_text("Label set on 2 scan(s).")
    expect(row_for(page, "47882682-9f38-4f45-afec-daadaa1b230b")).to_contain_text("Warehouse PII check")
    expect(row_for(page, "c0ffee12-3a4b-4c5d-8e9f-0123456789ab")).to_contain_text("Warehouse PII check")
    expect(row_for(page, "5d41402a-bc4b-4a76-b971-9d911017c592")).not_to_contain_text("Warehouse PII check")
    expect(bulk).to_be_hidden()


def test_an_operator_archives_two_selected_rows_and_they_leave_the_list(page: Page, operator):
    make_refreshed_scan("47882682-9f38-4f45-afec-daadaa1b230b", Scan.Status.FAILED)
    make_refreshed_scan("c0ffee12-3a4b-4c5d-8e9f-0123456789ab", Scan.Status.SUCCESS)
    make_refreshed_scan("5d41402a-bc4b-4a76-b971-9d911017c592", Scan.Status.PENDING)
    log_in(page, "olivia")

    row_for(page, "47882682-9f38-4f45-afec-daadaa1b230b").locator("input.row-select").check()
    row_for(page, "c0ffee12-3a4b-4c5d-8e9f-0123456789ab").locator("input.row-select").check()
    page.get_by_role("button", name="Archive (stop tracking)").click()

    expect(page.locator(".message-success")).to_contain_text("Archived 2 scan(s): they are no longer polled.")
    expect(table_rows(page)).to_have_count(1)
    expect(row_for(page, "5d41402a-bc4b-4a76-b971-9d911017c592")).to_be_visible()
    # The summary loads after the page and pushes the filters down: click once it is in.
    expect(page.locator("#live-header")).not_to_have_attribute("aria-busy", "true")

    page.locator("#archived").check()

    expect(table_rows(page)).to_have_count(2)
    expect(table_rows(page).locator(".badge-archived")).to_have_count(2)


def test_a_viewer_sees_no_operator_controls_and_is_refused_the_add_page(page: Page, viewer):
    make_refreshed_scan("47882682-9f38-4f45-afec-daadaa1b230b", Scan.Status.FAILED)
    log_in(page, "victor")

    expect(table_rows(page)).to_have_count(1)
    expect(page.locator(".who")).to_contain_text("viewer")
    expect(page.locator("input.row-select")).to_have_count(0)
    expect(page.locator("[data-select-all]")).to_have_count(0)
    expect(page.locator("#bulk-form")).to_have_count(0)
    expect(page.get_by_role("link", name="Add scans")).to_have_count(0)

    response = page.goto("/add/")

    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.locator("#id_ids")).to_have_count(0)


def test_the_slash_key_focuses_the_search_box(page: Page, operator):
    log_in(page, "olivia")
    search = page.locator("#q")
    expect(search).not_to_be_focused()

    page.keyboard.press("/")

    expect(search).to_be_focused()
    expect(search).to_have_value("")  # the shortcut is not typed into the box


def test_an_error_message_with_html_is_shown_as_text(page: Page, operator, simulator, protecto_settings):
    payload = "<img src=x onerror=alert(1)>"
    tracking_id = "6c5b4a39-28f1-4e0d-9c8b-7a6f5e4d3c2b"
    simulator.add_scan(tracking_id, status="FAILED", error_msg=payload)
    scans_track(ids=[tracking_id])
    scans_refresh_due()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, "olivia")

    error_cell = row_for(page, tracking_id).locator(".error-cell")
    expect(error_cell).to_have_text(payload)
    expect(error_cell.locator("img")).to_have_count(0)
    # An injected <img> would fail to load "x" and fire onerror before the load event.
    page.wait_for_load_state("load")

    page.get_by_role("link", name=tracking_id, exact=True).click()

    expect(page.locator(".error-box pre")).to_have_text(payload)
    expect(page.locator(".error-box img")).to_have_count(0)
    page.wait_for_load_state("load")
    assert dialogs == []
