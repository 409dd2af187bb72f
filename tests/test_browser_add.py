"""The Add page in real Chromium: a paste with a spaced line, a link and repeats, or a semicolon CSV, is previewed
category by category; Edit brings the text back as typed; the confirm adds exactly the right scans."""

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
table_rows = test_browser.table_rows
row_for = test_browser.row_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

UUID_ID = "47882682-9f38-4f45-afec-daadaa1b230b"
KNOWN_ID = "6c5b4a39-28f1-4e0d-9c8b-7a6f5e4d3c2b"
PASTED = "\n".join(
    [
        "bad id with spaces",
        f"https://protecto-trial.protecto.ai/app/data-scan/{UUID_ID}?tab=details",
        "nightly_1",
        KNOWN_ID,
        "nightly_1",
    ]
)


def _category(page: Page, heading: str):
    """The table or list under the preview heading that starts with `heading`."""
    title = page.locator("section[aria-label=Preview] h3").filter(has_text=heading)
    expect(title).to_have_count(1)
    return page.locator(f"[aria-labelledby='{title.get_attribute('id')}']")


def _submit(page: Page, text: str) -> None:
    page.fill("#id_ids", text)
    page.get_by_role("button", name="Add and refresh").click()


def test_a_paste_is_previewed_by_category_edited_and_confirmed_into_exactly_the_right_scans(page: Page, operator):
    make_refreshed_scan(KNOWN_ID, Scan.Status.SUCCESS)
    log_in(page, "olivia")
    page.get_by_role("link", name="Add scans").click()

    _submit(page, PASTED)

    expect(page.get_by_role("heading", name="Check before adding")).to_be_visible()
    rejected = _category(page, "Rejected (1)")
    expect(rejected.locator("tbody tr")).to_have_count(1)
    expect(rejected.locator("tbody tr td").first).to_have_text("bad id with spaces")
    expect(rejected.locator("tbody tr td").nth(1)).to_contain_text("contains spaces")
    expect(_category(page, "Repeated in this paste (1)").locator("li")).to_have_text(["nightly_1"])
    expect(_category(page, "Already tracked (1)").locator("li")).to_have_text([KNOWN_ID])
    expect(_category(page, "Will be added (2)").locator("tbody tr td.mono")).to_have_text([UUID_ID, "nightly_1"])
    assert Scan.objects.count() == 1  # nothing added before the confirm

    page.get_by_role("button", name="Edit").click()

    expect(page.locator("#id_ids")).to_have_value(PASTED)

    page.get_by_role("button", name="Add and refresh").click()
    page.get_by_role("button", name="Add 2 scans").click()

    results = page.locator("section[aria-label=Results]")
    expect(results.get_by_role("heading")).to_have_text("2 added, 1 already tracked, 1 repeated, 1 rejected")
    expect(page.locator("#id_ids")).to_have_value("bad id with spaces")  # left to fix; the added ones are gone
    assert sorted(Scan.objects.values_list("tracking_id", flat=True)) == sorted([KNOWN_ID, UUID_ID, "nightly_1"])

    page.get_by_role("link", name="Scans", exact=True).click()
    expect(table_rows(page)).to_have_count(3)
    for tracking_id in (KNOWN_ID, UUID_ID, "nightly_1"):
        expect(row_for(page, tracking_id)).to_have_count(1)


def test_a_semicolon_csv_with_a_bad_row_is_previewed_and_added_with_its_labels(page: Page, operator, tmp_path):
    upload = tmp_path / "export.csv"
    upload.write_text("Tracking ID;Label\r\neu_1;Finanzen, Q3\r\nnot valid!;x\r\neu_2;\r\n", encoding="utf-8-sig")
    log_in(page, "olivia")
    page.goto("/add/")
    page.set_input_files("#id_csv_file", str(upload))
    page.fill("#id_label", "default")
    page.get_by_role("button", name="Add and refresh").click()

    rejected = _category(page, "Rejected (1)")
    expect(rejected.locator("tbody tr td").first).to_have_text("not valid!")
    added = _category(page, "Will be added (2)").locator("tbody tr")
    expect(added.nth(0).locator("td")).to_have_text(["eu_1", "Finanzen, Q3"])
    expect(added.nth(1).locator("td")).to_have_text(["eu_2", "default"])

    page.get_by_role("button", name="Add 2 scans").click()

    expect(page.locator("section[aria-label=Results] h2")).to_contain_text("2 added")
    assert dict(Scan.objects.values_list("tracking_id", "label")) == {"eu_1": "Finanzen, Q3", "eu_2": "default"}
