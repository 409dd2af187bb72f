"""The list in real Chromium: Back after filtering, one request per click after typing (URL and table agree),
clean URLs from the time presets, a table that fits at 1280 px, cards at 390 px, and the density toggle."""

from __future__ import annotations

import re
from contextlib import suppress
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, Page, Request, Route, expect
from playwright.sync_api import Error as PlaywrightError

from scans.models import Scan
from tests import test_browser
from tests.factories import make_refreshed_scan, make_scan

# The browser, role groups, fast polling and page fixtures are the browser tests' own.
browser = test_browser.browser
_roles = test_browser._roles
_fast_polling = test_browser._fast_polling
page = test_browser.page
log_in = test_browser.log_in
table_rows = test_browser.table_rows
row_for = test_browser.row_for
mark_page = test_browser.mark_page
assert_not_reloaded = test_browser.assert_not_reloaded

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CRM_FAILED = "47882682-9f38-4f45-afec-daadaa1b230b"
CRM_OK = "c0ffee12-3a4b-4c5d-8e9f-0123456789ab"
HR_FAILED = "5d41402a-bc4b-4a76-b971-9d911017c592"
LONG_ERROR = (
    "Permission denied reading object CustomerDB/Marketingschema/Customerstable: the service account "
    "'protecto-scanner@tenant' lacks the SELECT privilege on 42 of 57 columns, including email and phone"
)


@pytest.fixture
def three_scans() -> None:
    make_refreshed_scan(CRM_FAILED, Scan.Status.FAILED, label="Nightly CRM sweep", error="Quota exceeded")
    make_refreshed_scan(CRM_OK, Scan.Status.SUCCESS, label="Nightly CRM sweep")
    make_refreshed_scan(HR_FAILED, Scan.Status.FAILED, label="HR share audit", error="Permission denied")


def open_list(page: Page) -> None:
    """Log in as the operator and wait for the summary: it loads after the page and moves everything below it,
    which would move a chip or a box between Playwright finding it and clicking or measuring it."""
    log_in(page, "olivia")
    expect(page.locator("#live-header")).not_to_have_attribute("aria-busy", "true")


def list_requests(page: Page) -> list[str]:
    """Every htmx request for the table from now on (live polls, which carry `v`, left out)."""
    seen: list[str] = []

    def record(request: Request) -> None:
        parts = urlsplit(request.url)
        if parts.path == "/" and request.headers.get("hx-request") and "v" not in dict(parse_qsl(parts.query)):
            seen.append(request.url)

    page.on("request", record)
    return seen


def type_then_click(page: Page, text: str, selector: str) -> None:
    """Type in the search box, leave it and click `selector`, all within the search's 300 ms delay however busy
    the machine is: a person typing and clicking at once, as one script in the page."""
    page.evaluate(
        """([text, selector]) => {
            const search = document.getElementById("q");
            search.focus();
            search.value = text;
            search.dispatchEvent(new Event("input", {bubbles: true}));
            search.dispatchEvent(new Event("change", {bubbles: true}));  // leaving the box, as a mouse click does
            document.querySelector(selector).click();
        }""",
        [text, selector],
    )


def query_of(page: Page) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(page.url).query, keep_blank_values=True))


def shown_ids(page: Page) -> list[str]:
    return page.locator("#scan-table tbody td.id-cell a").evaluate_all("links => links.map(a => a.title)")


def test_back_from_a_scan_opened_after_search_preset_and_chip_shows_the_whole_page_as_it_was(
    page: Page, operator, three_scans, live_server
):
    open_list(page)
    page.locator("#q").fill("crm")
    expect(table_rows(page)).to_have_count(2)
    page.locator('label[for="when-24h"]').click()
    expect(page).to_have_url(re.compile(r"when=24h"))
    page.locator(".chips .chip-failed").click()
    expect(table_rows(page)).to_have_count(1)
    filtered = page.url

    page.get_by_role("link", name=CRM_FAILED, exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("47882682")
    page.go_back()

    expect(page).to_have_url(filtered)
    expect(page.locator("header.topbar")).to_be_visible()
    expect(page.locator("#filters")).to_be_visible()
    assert page.evaluate("getComputedStyle(document.body).margin") == "0px", "the stylesheet is not applied"
    expect(table_rows(page)).to_have_count(1)
    expect(page.locator("#q")).to_have_value("crm")
    expect(page.locator("#when-24h")).to_be_checked()
    expect(page.locator(".chips .chip-failed")).to_have_attribute("aria-current", "true")

    page.go_back()  # one more: the htmx history entry before the chip

    expect(page).to_have_url(re.compile(r"\?q=crm&when=24h$"))
    expect(table_rows(page)).to_have_count(2)
    expect(page.locator("header.topbar")).to_be_visible()


def test_back_to_a_list_state_htmx_no_longer_holds_reloads_the_whole_page(page: Page, operator, three_scans):
    open_list(page)
    page.locator(".chips .chip-failed").click()
    expect(table_rows(page)).to_have_count(2)
    page.locator(".chips .chip-success").click()
    expect(table_rows(page)).to_have_count(1)
    page.evaluate("localStorage.removeItem('htmx-history-cache')")  # as after a full cache or another tab

    page.go_back()

    expect(page).to_have_url(re.compile(r"\?status=FAILED$"))
    expect(table_rows(page)).to_have_count(2)
    expect(page.locator("header.topbar")).to_have_count(1)
    expect(page.locator("#filters")).to_have_count(1)
    expect(page.locator(".chips .chip-failed")).to_have_attribute("aria-current", "true")


@pytest.mark.parametrize("click", ["chip", "sort"])
def test_a_click_right_after_typing_sends_one_request_and_the_url_matches_the_table(
    page: Page, operator, three_scans, live_server, click
):
    open_list(page)
    expect(table_rows(page)).to_have_count(3)
    mark_page(page)
    sent = list_requests(page)

    # Typed and clicked within the search's 300 ms delay: the click carries the search; the delayed one is dropped.
    if click == "chip":
        target = ".chips .chip-failed"
        expected_query, expected_ids = {"q": "crm", "status": "FAILED"}, [CRM_FAILED]
    else:
        target = "th.c-submitted a"  # newest first is the default: this turns it round
        expected_query, expected_ids = {"q": "crm", "sort": "submitted"}, [CRM_FAILED, CRM_OK]
    type_then_click(page, "crm", target)

    expect(page).to_have_url(re.compile(r"\?"))
    page.wait_for_timeout(1200)  # past the search delay and a poll: nothing else may land
    assert query_of(page) == expected_query
    assert sorted(shown_ids(page)) == sorted(expected_ids)
    assert len(sent) == 1, sent
    assert dict(parse_qsl(urlsplit(sent[0]).query)) == expected_query
    assert_not_reloaded(page)

    # The URL is a link to the same view.
    on_screen = shown_ids(page)
    page.goto(page.url)
    expect(table_rows(page)).to_have_count(len(on_screen))
    assert shown_ids(page) == on_screen


def test_a_chip_clicked_while_a_search_is_in_flight_replaces_it(page: Page, operator, three_scans, live_server):
    open_list(page)
    expect(table_rows(page)).to_have_count(3)
    sent = list_requests(page)
    held: list[Route] = []
    # The search's request is held back, so the chip is clicked while it is still on its way.
    page.route(re.compile(r"/\?q=crm$"), lambda route: held.append(route))

    page.locator("#q").fill("crm")
    for _ in range(50):  # until the delayed search has left (300 ms, longer on a busy machine)
        if held:
            break
        page.wait_for_timeout(100)
    assert len(held) == 1
    page.locator(".chips .chip-failed").click()
    expect(page).to_have_url(re.compile(r"status=FAILED"))
    expect(table_rows(page)).to_have_count(1)
    with suppress(PlaywrightError):  # its answer comes late, if at all: htmx aborted the request
        held[0].continue_()

    page.wait_for_timeout(1200)
    assert query_of(page) == {"q": "crm", "status": "FAILED"}
    assert shown_ids(page) == [CRM_FAILED]
    assert len(sent) == 2, sent


def test_the_time_presets_put_only_what_is_chosen_in_the_url(page: Page, operator, live_server):
    now = timezone.now()
    make_scan(
        "ended-an-hour-ago",
        status=Scan.Status.FAILED,
        submitted_at=now - timedelta(days=3),
        ended_at=now - timedelta(hours=1),
    )
    make_scan("submitted-now", status=Scan.Status.PENDING, submitted_at=now)
    open_list(page)
    expect(table_rows(page)).to_have_count(2)
    expect(page.locator("#from")).to_be_hidden()  # the days are for "Custom" only

    page.locator('label[for="when-24h"]').click()
    expect(page).to_have_url(f"{live_server.url}/?when=24h")
    expect(table_rows(page)).to_have_count(1)

    page.locator("#time").select_option("ended")
    expect(page).to_have_url(f"{live_server.url}/?time=ended&when=24h")
    assert shown_ids(page) == ["ended-an-hour-ago"]

    page.locator('label[for="when-custom"]').click()
    expect(page.locator("#from")).to_be_visible()
    expect(page.locator('label[for="from"]')).to_have_text("From (UTC)")
    page.locator("#from").fill(timezone.localdate().isoformat())
    expect(page).to_have_url(f"{live_server.url}/?time=ended&when=custom&from={timezone.localdate().isoformat()}")

    page.locator('label[for="when-any"]').click()
    expect(page).to_have_url(f"{live_server.url}/?time=ended")
    page.locator("#time").select_option("submitted")
    expect(page).to_have_url(f"{live_server.url}/")
    expect(table_rows(page)).to_have_count(2)


def make_wide_rows() -> None:
    """Rows with everything at its widest: long IDs, long labels and sources, long errors, both badges."""
    long_label = "Quarterly customer data inventory for the EMEA marketing warehouse"
    for n in range(6):
        make_refreshed_scan(
            f"8f2ed477-e056-4b04-a9a0-073f100c8f73161120261216{n:02d}",
            Scan.Status.FAILED,
            label=long_label,
            data_source="salesforce-marketing-cloud-eu",
            error=LONG_ERROR + "\nat step 3 of 7",
        )


def test_at_1280_px_the_table_fits_and_a_cut_error_opens_in_place(page: Page, operator, live_server):
    make_wide_rows()
    open_list(page)
    expect(table_rows(page)).to_have_count(6)

    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    scroller = page.locator(".table-scroll")
    assert scroller.evaluate("el => el.scrollWidth <= el.clientWidth")
    row = table_rows(page).first
    error = row.locator("td.error-cell [data-error]")
    expect(error).to_be_visible()
    box = error.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1280 and box["width"] > 200
    assert error.evaluate("el => el.scrollWidth > el.clientWidth"), "the long error is not cut to one line"
    one_line = error.bounding_box()["height"]
    # The ID shows its ends; its link still names the whole ID.
    link = row.locator("td.id-cell a")
    assert link.bounding_box()["width"] < 140
    tracking_id = link.get_attribute("title")
    expect(link).to_have_accessible_name(tracking_id)
    assert len(tracking_id) == 50

    row.get_by_role("button", name="Show the whole error").click()

    expect(error).to_have_text(LONG_ERROR + "\nat step 3 of 7")
    assert error.bounding_box()["height"] > 2 * one_line
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    make_scan("arrives-later")  # a live update redraws the table: the opened error stays open
    expect(table_rows(page)).to_have_count(7)
    row = row_for(page, tracking_id)
    error = row.locator("td.error-cell [data-error]")
    expect(error).to_have_text(LONG_ERROR + "\nat step 3 of 7")
    row.get_by_role("button", name="Show the error's first line only").click()
    expect(error).to_have_text(LONG_ERROR)


def test_at_390_px_each_scan_is_a_card_with_its_status_and_error_first(browser: Browser, operator, live_server):
    make_wide_rows()
    context = browser.new_context(base_url=live_server.url, viewport={"width": 390, "height": 844})
    context.set_default_timeout(test_browser.LIVE_TIMEOUT_MS)
    phone = context.new_page()
    try:
        open_list(phone)
        row = table_rows(phone).first
        expect(row).to_be_visible()

        assert row.evaluate("tr => getComputedStyle(tr).display") == "grid"
        assert phone.evaluate("document.documentElement.scrollWidth <= innerWidth")
        status = row.locator("td.c-status .badge").first
        status.scroll_into_view_if_needed()  # down, past the header and filters; never sideways
        expect(status).to_be_in_viewport()
        boxes = row.evaluate(
            """tr => Object.fromEntries(["td.c-status .badge", "td.error-cell", "td.id-cell"].map(
                selector => [selector, tr.querySelector(selector).getBoundingClientRect().toJSON()]))"""
        )
        status_box, error_box, id_box = boxes["td.c-status .badge"], boxes["td.error-cell"], boxes["td.id-cell"]
        assert status_box["right"] <= 390 and error_box["right"] <= 390
        assert status_box["y"] < error_box["y"] < id_box["y"], "status, then error, then the ID"
    finally:
        context.close()


def test_compact_rows_are_remembered_in_this_browser(page: Page, operator, three_scans):
    open_list(page)
    row = table_rows(page).first
    comfortable = row.bounding_box()["height"]

    page.get_by_role("button", name="Compact rows").click()

    expect(page.get_by_role("button", name="Compact rows")).to_have_attribute("aria-pressed", "true")
    compact = row.bounding_box()["height"]
    assert compact < comfortable
    page.reload()
    expect(page.get_by_role("button", name="Compact rows")).to_have_attribute("aria-pressed", "true")
    assert table_rows(page).first.bounding_box()["height"] == compact
