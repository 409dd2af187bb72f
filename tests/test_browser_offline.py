"""In real Chromium: when live polls fail the page says so and stops ticking durations, until a poll succeeds.

The polls are made to fail by Playwright's route interception (the network between browser and server), not by
changing our code: the server answers 500, or the request never reaches it.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, Route, expect

from scans.models import Scan
from tests import test_browser
from tests.factories import make_scan

# The browser, role groups, fast polling and page fixtures are the browser tests' own.
browser = test_browser.browser
page = test_browser.page
_roles = test_browser._roles
_fast_polling = test_browser._fast_polling
log_in = test_browser.log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = "/tmp/h-broker-var"
BANNER = "Live updates failing — retrying"
# A poll (every 1 s here) carries ?v=<version>; nothing else on these pages does.
POLL = re.compile(r"[?&]v=")


def _running_scan() -> Scan:
    started = timezone.now() - timedelta(minutes=5)
    return make_scan(
        "running-scan",
        status=Scan.Status.IN_PROGRESS,
        raw_status="IN-PROGRESS",
        submitted_at=started - timedelta(minutes=1),
        started_at=started,
        next_check_at=timezone.now() + timedelta(hours=1),
    )


def _ticks(page: Page, *, seconds: float = 2.2) -> bool:
    """True when the running duration on the page changes within `seconds`."""
    ticking = page.locator("span.ticking").first
    before = ticking.inner_text()
    page.wait_for_timeout(seconds * 1000)
    return ticking.inner_text() != before


def _fail_with_500(route: Route) -> None:
    route.fulfill(status=500, body="database unavailable")


def _never_arrive(route: Route) -> None:
    route.abort("connectionrefused")


@pytest.mark.parametrize(
    ("where", "fault"), [("/", _fail_with_500), ("/scans/running-scan/", _never_arrive)], ids=["list", "scan-page"]
)
def test_failing_polls_show_a_banner_and_freeze_durations_until_a_poll_succeeds(
    page: Page, operator, where, fault
):
    _running_scan()
    log_in(page, "olivia")
    page.goto(where)
    banner = page.get_by_role("alert").filter(has_text=BANNER)
    expect(banner).to_be_hidden()
    assert _ticks(page)

    page.route(POLL, fault)

    expect(banner).to_be_visible()
    assert not _ticks(page)

    page.unroute(POLL)

    expect(banner).to_be_hidden()
    assert _ticks(page)


def test_the_failing_banner_fits_a_desktop_and_a_phone(page: Page, operator):
    _running_scan()
    log_in(page, "olivia")
    page.goto("/")
    page.route(POLL, _fail_with_500)
    expect(page.get_by_text(BANNER)).to_be_visible()
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 800})
        page.screenshot(path=f"{SHOTS}/live-failing-{width}.png")
        banner_box = page.locator("#live-failing").bounding_box()
        assert banner_box is not None and banner_box["width"] <= width  # on screen, no sideways scroll
