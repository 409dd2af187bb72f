"""One time format: pages write times 24-hour with an ISO-like date on the viewer's clock, with the UTC time in the
tooltip; JSON writes ISO 8601 with an offset. (Mail writes UTC: tests/test_alerts.py.)

Pages are read through an HTML parser; the last test reads them in real Chromium, whose script rewrites times on
the browser's own clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import import_module

import pytest
from bs4 import BeautifulSoup
from django.template import Context, Template
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from scans.alerts import alerts_snooze
from scans.models import Alert, AlertMute, RefreshRun, Scan, StatusChange
from tests import test_browser
from tests.factories import make_scan
from tests.helpers import parse_html

T0 = datetime(2026, 11, 29, 14, 5, 7, tzinfo=UTC)
ZONE = "Asia/Kolkata"  # UTC+05:30: a half-hour offset shows any time left on UTC or rounded to the hour
LOCAL = "2026-11-29 19:35"
PAGE_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")


def render(source: str, **context) -> str:
    return Template("{% load scan_format %}" + source).render(Context(context))


def parse_html_fragment(html: str):
    """The one element a tag rendered: a <time>, or the placeholder's <span>."""
    return BeautifulSoup(html, "html.parser").find(["time", "span"])


def in_zone(client, zone: str):
    """The client as a browser whose timezone.js stored `zone` in the tz cookie."""
    client.cookies["tz"] = zone
    return client


def page_times(response) -> list:
    """Every <time> element of a page's main content (not the header's own)."""
    return parse_html(response).select("main time")


def assert_page_format(time) -> None:
    """The element shows the page format, says its UTC time in the title, and carries ISO 8601 with an offset."""
    moment = datetime.fromisoformat(time["datetime"])
    assert moment.utcoffset() is not None, time
    text = time.get_text(strip=True)
    assert any(_parses(text, fmt) for fmt in PAGE_FORMATS), f"not in the page format: {text!r}"
    assert time["title"].endswith(f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"), time


def _parses(text: str, fmt: str) -> bool:
    try:
        datetime.strptime(text, fmt)
    except ValueError:
        return False
    return True


# --- The tag -------------------------------------------------------------------------------------------------


def test_a_time_is_shown_on_the_viewers_clock_with_utc_in_its_tooltip():
    with timezone.override(ZONE):
        html = render("{% moment when %}", when=T0)

    time = parse_html_fragment(html)
    assert time.get_text() == LOCAL
    assert time["title"] == "2026-11-29 14:05:07 UTC"
    assert datetime.fromisoformat(time["datetime"]) == T0


def test_seconds_are_shown_on_request():
    with timezone.override(ZONE):
        assert parse_html_fragment(render("{% moment when seconds=True %}", when=T0)).get_text() == LOCAL + ":07"


def test_a_relative_time_carries_the_absolute_time_on_both_clocks_in_its_tooltip():
    with timezone.override(ZONE):
        time = parse_html_fragment(render("{% moment when relative=True %}", when=T0))

    assert "data-relative" in time.attrs
    assert time["title"] == "2026-11-29 19:35:07 IST; 2026-11-29 14:05:07 UTC"


def test_a_viewer_on_utc_gets_the_utc_time_once_in_the_tooltip():
    with timezone.override(UTC):
        time = parse_html_fragment(render("{% moment when relative=True %}", when=T0))

    assert (time.get_text(), time["title"]) == ("2026-11-29 14:05", "2026-11-29 14:05:07 UTC")


def test_no_time_shows_the_placeholder_given():
    assert parse_html_fragment(render("{% moment when %}", when=None)).get_text() == "—"
    assert parse_html_fragment(render('{% moment when empty="never" %}', when=None)).get_text() == "never"


# --- The pages -----------------------------------------------------------------------------------------------


@pytest.fixture
def scan_with_everything(db):
    scan = make_scan(
        "time-format-scan",
        status=Scan.Status.FAILED,
        raw_status="FAILED",
        error_message="Quota exceeded",
        submitted_at=T0 - timedelta(minutes=20),
        started_at=T0 - timedelta(minutes=15),
        ended_at=T0 - timedelta(minutes=5),
        last_changed_at=T0,
        last_checked_at=T0,
        last_reported_at=T0,
    )
    StatusChange.objects.create(scan=scan, from_status="NEW", to_status="FAILED", observed_at=T0)
    Alert.objects.create(
        kind=Alert.Kind.FAILED, scan=scan, subject="[FAILED] x", state=Alert.State.SENT, sent_at=T0
    )
    return scan


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/scans/time-format-scan/", "/alerts/"])
def test_every_time_on_the_pages_is_in_the_one_format(operator_client, scan_with_everything, path):
    response = in_zone(operator_client, ZONE).get(path)

    times = page_times(response)
    assert times, "the page shows no time"
    for time in times:
        assert_page_format(time)


@pytest.mark.django_db
def test_the_scan_page_shows_the_api_times_on_the_viewers_clock(operator_client, scan_with_everything):
    response = in_zone(operator_client, ZONE).get("/scans/time-format-scan/")

    shown = {time.get_text(strip=True) for time in page_times(response)}
    assert {"2026-11-29 19:15:07", "2026-11-29 19:20:07", "2026-11-29 19:30:07"} <= shown


@pytest.mark.django_db
def test_the_alert_settings_page_writes_mutes_and_snoozes_in_the_one_format(operator_client, operator):
    AlertMute.objects.create(label="nightly CRM", created_by=operator)
    alerts_snooze(until=timezone.now() + timedelta(hours=2), user=operator)

    times = page_times(in_zone(operator_client, ZONE).get("/alerts/settings/"))

    assert len(times) >= 2
    for time in times:
        assert_page_format(time)


@pytest.mark.django_db
def test_the_health_json_writes_iso_8601_with_an_offset(client):
    RefreshRun.objects.create(started_at=T0, finished_at=T0, outcome=RefreshRun.Outcome.OK, ids_asked=1)

    body = client.get("/healthz").json()

    stamps = [body["checks"]["poller"]["last_success_at"], body["checks"]["api"]["last_refresh"]]
    assert [datetime.fromisoformat(stamp) for stamp in stamps] == [T0, T0]
    assert all(datetime.fromisoformat(stamp).utcoffset() is not None for stamp in stamps)


# --- In the browser ------------------------------------------------------------------------------------------

browser = test_browser.browser


@pytest.fixture
def roles(transactional_db) -> None:
    """The Viewers and Operators groups, made as the browser tests make them (see tests/test_browser.py)."""
    import_module("scans.migrations.0002_roles").create_roles(test_browser._roles_migration_apps(), None)


@pytest.fixture
def kolkata_page(browser: Browser, live_server) -> Iterator[Page]:
    """A page in a browser whose clock is in Kolkata and whose locale writes 12-hour times."""
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 1280, "height": 900}, timezone_id=ZONE, locale="en-US"
    )
    context.set_default_timeout(test_browser.LIVE_TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_in_a_12_hour_locale_the_scan_page_still_shows_24_hour_times_on_the_browsers_clock(
    roles, kolkata_page: Page, operator
):
    page = kolkata_page
    make_scan("late-evening-scan", submitted_at=T0, created_at=T0)
    # The first page: before the tz cookie exists the server writes UTC; the script must put it on the browser's
    # clock all the same.
    test_browser.log_in(page, "olivia")
    page.context.clear_cookies(name="tz")
    page.goto("/scans/late-evening-scan/")

    submitted = page.locator("dd time").first
    expect(submitted).to_have_text("2026-11-29 19:35:07")
    assert submitted.get_attribute("title") == "2026-11-29 14:05:07 UTC"
    assert "PM" not in page.locator("main").inner_text()
