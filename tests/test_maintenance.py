"""Maintenance made visible: the snooze banner on every page with its "End now", scheduled windows and their
notice, the snooze presets, times read and shown in the viewer's time zone (the `tz` cookie), and the muted
markers on the list's rows and the scan page."""

from datetime import UTC, datetime, timedelta

import pytest
from django.apps.registry import Apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext

from scans.alerts import alerts_end_snooze, alerts_mute, alerts_snooze
from scans.models import AlertSnooze, Scan
from tests.factories import make_scan
from tests.helpers import page_text, parse_html

pytestmark = pytest.mark.django_db

# A Saturday morning: 10:00 in Berlin (CET, UTC+1), 04:00 in New York (EST, UTC-5).
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
SNOOZE = "/alerts/snooze/"
SETTINGS = "/alerts/settings/"
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def clock(time_machine):
    time_machine.move_to(T0, tick=False)
    return T0


def in_zone(client, zone: str):
    """The client as a browser whose timezone.js stored `zone` in the tz cookie."""
    client.cookies["tz"] = zone
    return client


def end_url(snooze: AlertSnooze) -> str:
    return f"/alerts/snooze/{snooze.pk}/end/"


def banner(response):
    """The maintenance banner's element, or None."""
    return parse_html(response).select_one('[data-maintenance="active"]')


def shown(element) -> str:
    """The element's text as the browser shows it: runs of whitespace are one space."""
    return " ".join(element.get_text().split())


def banner_text(response) -> str:
    return shown(banner(response).select_one(".maintenance-text"))


def notice_text(response) -> str | None:
    notice = parse_html(response).select_one('[data-maintenance="scheduled"]')
    return None if notice is None else shown(notice)


def label_for(response, name: str) -> str:
    page = parse_html(response)
    field = page.select_one(f'form[action="{SNOOZE}"] [name="{name}"]')
    return page.select_one(f'label[for="{field["id"]}"]').get_text(strip=True)


def snooze_for(operator, *, hours: float = 2, reason: str = "Protecto upgrade", **fields) -> AlertSnooze:
    return alerts_snooze(until=T0 + timedelta(hours=hours), reason=reason, user=operator, **fields)


# --- Presets and time zones -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "preset", "until"),
    [
        ("Europe/Berlin", "1h", T0 + timedelta(hours=1)),
        ("Europe/Berlin", "4h", T0 + timedelta(hours=4)),
        # 08:00 tomorrow on the viewer's clock: Sunday 08:00 CET is 07:00 UTC, 08:00 EST is 13:00 UTC.
        ("Europe/Berlin", "morning", datetime(2026, 11, 29, 7, 0, tzinfo=UTC)),
        ("America/New_York", "morning", datetime(2026, 11, 29, 13, 0, tzinfo=UTC)),
    ],
)
def test_each_preset_snoozes_from_now_until_its_end(operator_client, operator, zone, preset, until):
    response = in_zone(operator_client, zone).post(SNOOZE, {"preset": preset, "reason": "upgrade"}, follow=True)

    snooze = AlertSnooze.objects.get()
    assert (snooze.starts_at, snooze.until, snooze.created_by) == (T0, until, operator)
    assert banner(response) is not None


def test_the_morning_preset_is_08_00_tomorrow_on_each_viewers_own_clock(operator_client, time_machine):
    # 23:30 UTC on Saturday: already Sunday 00:30 in Berlin, still Saturday 18:30 in New York.
    time_machine.move_to(T0 + timedelta(hours=14, minutes=30), tick=False)
    offered = {}
    for zone in ("America/New_York", "Europe/Berlin"):
        page = parse_html(in_zone(operator_client, zone).get(SETTINGS))
        offered[zone] = page.select_one('input[name="preset"][value="morning"]').parent.get_text(strip=True)

    in_zone(operator_client, "Europe/Berlin").post(SNOOZE, {"preset": "morning"})

    assert offered == {
        "America/New_York": "Until 08:00 tomorrow (Sun 29 Nov)",
        "Europe/Berlin": "Until 08:00 tomorrow (Mon 30 Nov)",
    }
    assert AlertSnooze.objects.get().until == datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


def test_custom_times_are_read_in_the_viewers_zone_and_stored_in_utc(operator_client):
    client = in_zone(operator_client, "Europe/Berlin")
    page = client.get(SETTINGS)
    assert (label_for(page, "starts_at"), label_for(page, "until")) == (
        "From (Europe/Berlin)",
        "Until (Europe/Berlin)",
    )

    response = client.post(
        SNOOZE,
        {"preset": "custom", "starts_at": "2026-11-28T22:00", "until": "2026-11-29T02:00", "reason": "DB move"},
        follow=True,
    )

    snooze = AlertSnooze.objects.get()
    assert (snooze.starts_at, snooze.until) == (
        datetime(2026, 11, 28, 21, 0, tzinfo=UTC),
        datetime(2026, 11, 29, 1, 0, tzinfo=UTC),
    )
    assert "Maintenance scheduled 2026-11-28 22:00 CET\N{EN DASH}2026-11-29 02:00 CET" in page_text(response)


@pytest.mark.parametrize(
    "cookie", [None, "", "Mars/Olympus", "../../etc/passwd", "localtime", "Europe", "x" * 300]
)
def test_without_a_known_zone_in_the_cookie_times_are_read_and_shown_in_utc(operator_client, cookie):
    if cookie is not None:
        in_zone(operator_client, cookie)
    page = operator_client.get(SETTINGS)
    assert label_for(page, "until") == "Until (UTC)"

    response = operator_client.post(
        SNOOZE, {"preset": "custom", "until": "2026-11-28T12:00", "reason": "x"}, follow=True
    )

    assert AlertSnooze.objects.get().until == datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert banner_text(response) == "Alerts snoozed until today 12:00 UTC by olivia: x"


def test_one_viewers_zone_never_leaks_into_the_next_request(operator_client, operator):
    snooze_for(operator)
    assert "12:00 CET" in banner_text(in_zone(operator_client, "Europe/Berlin").get("/"))

    del operator_client.cookies["tz"]

    assert "11:00 UTC" in banner_text(operator_client.get("/"))


def test_the_scan_page_shows_its_times_on_the_viewers_clock(viewer_client):
    make_scan("some-scan", submitted_at=T0 - timedelta(minutes=30), created_at=T0)

    shown = parse_html(in_zone(viewer_client, "America/New_York").get("/scans/some-scan/")).get_text()

    assert "2026-11-28 03:30:00" in shown and "2026-11-28 04:00:00" in shown
    assert " UTC" not in shown  # UTC is in the tooltips only


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"preset": "custom"}, "Give the end of the snooze (Until)."),
        ({"preset": "custom", "until": "2026-11-28T08:59"}, "The end of the snooze must be in the future."),
        (
            {"preset": "custom", "starts_at": "2026-11-28T12:00", "until": "2026-11-28T11:00"},
            "The end of the snooze must be after its start.",
        ),
        ({"preset": "custom", "until": "2027-03-01T00:00"}, "A snooze must end within 90 days."),
        ({"preset": "custom", "until": "9999-12-31T23:59"}, "A snooze must end within 90 days."),
        ({"preset": "1h", "until": "2026-11-28T12:00"}, "Choose “Custom” to use the From and Until times"),
        ({"preset": "forever"}, "Select a valid choice."),
        ({}, "Choose how long to snooze."),
        # 02:30 does not exist in Berlin on the night clocks go forward.
        ({"preset": "custom", "until": "2027-03-28T02:30"}, "be interpreted in time zone Europe/Berlin"),
    ],
    ids=[
        "no-end",
        "past",
        "end-before-start",
        "too-far",
        "year-9999",
        "preset-and-times",
        "unknown",
        "none",
        "dst-gap",
    ],
)
def test_a_bad_snooze_is_refused_with_a_clear_error(operator_client, data, error):
    response = in_zone(operator_client, "Europe/Berlin").post(SNOOZE, data)

    assert response.status_code == 400
    assert error in page_text(response)
    assert not AlertSnooze.objects.exists()


def test_a_start_a_moment_ago_means_now(operator_client):
    in_zone(operator_client, "Europe/Berlin").post(
        SNOOZE, {"preset": "custom", "starts_at": "2026-11-28T09:55", "until": "2026-11-28T11:00"}
    )

    assert AlertSnooze.objects.get().starts_at == T0


# --- The banner -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["/", "/alerts/", SETTINGS, "/scans/some-scan/", "/add/"])
def test_every_page_shows_the_snooze_in_force_in_the_viewers_zone(operator_client, operator, where):
    make_scan("some-scan")
    snooze_for(operator)

    response = in_zone(operator_client, "Europe/Berlin").get(where)

    assert banner_text(response) == "Alerts snoozed until today 12:00 CET by olivia: Protecto upgrade"


@pytest.mark.parametrize("state", ["none", "ended", "over", "scheduled"])
def test_no_banner_without_a_snooze_in_force(operator_client, operator, time_machine, state):
    if state == "ended":
        alerts_end_snooze(snooze_id=snooze_for(operator).pk)
    elif state == "over":
        snooze_for(operator, hours=1)
        time_machine.move_to(T0 + timedelta(hours=1), tick=False)
    elif state == "scheduled":
        snooze_for(operator, hours=3, starts_at=T0 + timedelta(hours=1))

    response = operator_client.get("/")

    assert banner(response) is None
    assert "Alerts snoozed" not in page_text(response)


def test_a_scheduled_window_shows_a_smaller_notice_until_it_begins(operator_client, operator, time_machine):
    snooze_for(operator, hours=13, starts_at=T0 + timedelta(hours=11), reason="Quarterly patching")
    client = in_zone(operator_client, "Europe/Berlin")

    assert notice_text(client.get("/")) == (
        "Maintenance scheduled today 21:00\N{EN DASH}23:00 CET: Quarterly patching"
    )

    time_machine.move_to(T0 + timedelta(hours=11), tick=False)
    response = client.get("/")

    assert notice_text(response) is None
    assert banner_text(response) == "Alerts snoozed until today 23:00 CET by olivia: Quarterly patching"


@pytest.mark.parametrize(
    ("starts", "ends", "banner_says", "notice_says"),
    [
        # Saturday 10:00 in Berlin. Tomorrow by the viewer's calendar, not 24 hours on.
        (None, T0 + timedelta(hours=13), "until today 23:00 CET", None),
        (None, T0 + timedelta(hours=14), "until tomorrow 00:00 CET", None),
        (None, T0 + timedelta(days=3), "until Tue 1 Dec 10:00 CET", None),
        (T0 + timedelta(days=1), T0 + timedelta(days=1, hours=2), None, "tomorrow 10:00\N{EN DASH}12:00 CET"),
        (
            T0 + timedelta(days=1, hours=12),
            T0 + timedelta(days=1, hours=16),
            None,
            "tomorrow 22:00\N{EN DASH}Mon 30 Nov 02:00 CET",
        ),
    ],
    ids=["today", "midnight", "days-ahead", "scheduled-tomorrow", "scheduled-over-midnight"],
)
def test_the_banner_and_the_notice_name_days_the_short_way(
    operator_client, operator, starts, ends, banner_says, notice_says
):
    alerts_snooze(starts_at=starts, until=ends, user=operator)

    response = in_zone(operator_client, "Europe/Berlin").get("/")

    assert (banner_text(response) if banner(response) else None) == (
        banner_says and f"Alerts snoozed {banner_says} by olivia"
    )
    assert notice_text(response) == (notice_says and f"Maintenance scheduled {notice_says}")


def test_end_now_ends_the_snooze_and_returns_to_the_same_view_of_the_list(operator_client, operator):
    snooze = snooze_for(operator)
    page = operator_client.get("/?status=FAILED&sort=problems")
    form = banner(page).select_one("form")
    assert (form["method"], form["action"]) == ("post", end_url(snooze))
    assert form.select_one('input[name="next"]')["value"] == "/?status=FAILED&sort=problems"

    response = operator_client.post(form["action"], {"next": "/?status=FAILED&sort=problems"}, follow=True)

    assert response.redirect_chain == [("/?status=FAILED&sort=problems", 302)]
    assert "Snooze ended: alerts are on again." in page_text(response)
    assert banner(response) is None
    assert AlertSnooze.objects.get().ended_at == T0


def test_a_viewer_sees_the_banner_but_no_end_now_and_may_not_post_it(viewer_client, operator):
    snooze = snooze_for(operator)

    page = viewer_client.get("/")

    assert banner_text(page).startswith("Alerts snoozed until")
    assert banner(page).select("form, button") == []
    assert viewer_client.post(end_url(snooze)).status_code == 403
    assert AlertSnooze.objects.get().ended_at is None


def test_end_now_answers_only_a_post_from_someone_logged_in(client, operator_client, operator):
    snooze = snooze_for(operator)
    assert operator_client.get(end_url(snooze)).status_code == 405
    operator_client.logout()

    response = client.post(end_url(snooze))

    assert response["Location"].startswith("/login/")
    assert AlertSnooze.objects.get().ended_at is None


def test_cancelling_a_scheduled_window_says_so(operator_client, operator):
    snooze = snooze_for(operator, hours=3, starts_at=T0 + timedelta(hours=1))

    response = in_zone(operator_client, "Europe/Berlin").post(end_url(snooze), follow=True)

    assert "Scheduled maintenance 2026-11-28 11:00 CET\N{EN DASH}2026-11-28 13:00 CET cancelled." in page_text(
        response
    )
    assert notice_text(response) is None


def snooze_queries(queries) -> list[str]:
    return [query["sql"] for query in queries if "scans_alertsnooze" in query["sql"]]


def test_the_banner_costs_one_query_on_a_page_however_many_snoozes_there_were_and_none_on_a_live_fragment(
    operator_client, operator
):
    for days in range(1, 31):  # a month of past maintenance: over, so never read
        AlertSnooze.objects.create(starts_at=T0 - timedelta(days=days, hours=1), until=T0 - timedelta(days=days))
    snooze_for(operator)
    snooze_for(operator, hours=5, starts_at=T0 + timedelta(hours=4))
    operator_client.get("/")  # warm-up: the session is cached from here on

    with CaptureQueriesContext(connection) as page:
        response = operator_client.get("/")
    with CaptureQueriesContext(connection) as fragment:
        operator_client.get("/?v=changed", **HTMX)

    assert banner(response) is not None and notice_text(response) is not None
    assert len(snooze_queries(page.captured_queries)) == 1
    assert snooze_queries(fragment.captured_queries) == []


# --- Muted markers --------------------------------------------------------------------------------------------


@pytest.fixture
def mutes(operator):
    """Four failed scans: one muted itself, one whose label is muted, one with another label, one with none."""
    for tracking_id, label in [
        ("muted-scan", "crm"),
        ("label-muted", "noisy"),
        ("other-label", "crm"),
        ("no-label", ""),
    ]:
        make_scan(tracking_id, label=label, status=Scan.Status.FAILED, submitted_at=T0 - timedelta(minutes=5))
    alerts_mute(scan=Scan.objects.get(tracking_id="muted-scan"), user=operator)
    alerts_mute(label="noisy", user=operator)


def muted_rows(response) -> dict[str, str | None]:
    """Each row's tracking ID and the title of its muted marker (None: no marker)."""
    rows = {}
    for row in parse_html(response).select("#scan-table tbody tr"):
        mark = row.select_one('[aria-label="Alerts muted"]')
        rows[row.select_one("a.mono").get_text(strip=True)] = None if mark is None else mark["title"]
    return rows


MARKED = {
    "muted-scan": "Alerts muted for this scan",
    "label-muted": "Alerts muted for the label “noisy”",
    "other-label": None,
    "no-label": None,
}


# "problems" reads its page through a raw UNION of three parts: the markers must survive that path too.
@pytest.mark.parametrize("query", ["", "?sort=problems", "?q=label"])
def test_the_list_marks_muted_scans_and_scans_with_a_muted_label_only(viewer_client, mutes, query):
    response = viewer_client.get(f"/{query}")

    expected = {key: value for key, value in MARKED.items() if "label" in key} if query == "?q=label" else MARKED
    assert muted_rows(response) == expected


@pytest.mark.parametrize(("tracking_id", "title"), MARKED.items())
def test_the_scan_page_marks_a_muted_scan_or_label(viewer_client, mutes, tracking_id, title):
    mark = parse_html(viewer_client.get(f"/scans/{tracking_id}/")).select_one('[aria-label="Alerts muted"]')

    assert (None if mark is None else mark["title"]) == title


def test_the_markers_cost_the_live_table_no_query_of_its_own(
    operator_client, operator, django_assert_max_num_queries
):
    for n in range(100):
        make_scan(f"scan-{n:03d}", label=f"label-{n % 7}", submitted_at=T0 - timedelta(minutes=n))
        if n % 3 == 0:
            alerts_mute(scan=Scan.objects.get(tracking_id=f"scan-{n:03d}"))
    alerts_mute(label="label-2")
    operator_client.get("/?per=100", **HTMX)  # warm-up: the session is cached from here on

    # The same budget as the live table without mutes (tests/test_dashboard_filters.py).
    with django_assert_max_num_queries(6):
        response = operator_client.get("/?per=100&sort=problems", **HTMX)

    marked = [tracking_id for tracking_id, title in muted_rows(response).items() if title]
    assert len(marked) == len({f"scan-{n:03d}" for n in range(100) if n % 3 == 0 or n % 7 == 2})


# --- The migration --------------------------------------------------------------------------------------------


def _migrate(targets) -> Apps:
    """Move the test database's schema to `targets` and return the models as they are there."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_the_migration_starts_each_existing_snooze_when_it_was_made():
    # Transactional: the SQLite schema editor cannot run inside the atomic block of an ordinary test.
    # Found by name, not number: parallel work may renumber it.
    graph = MigrationExecutor(connection).loader.graph
    window = next(key for key in graph.leaf_nodes() + list(graph.nodes) if key[1].endswith("_snooze_window"))
    (before,) = [parent for parent in graph.node_map[window].parents if parent.key[0] == "scans"]
    try:
        AlertSnoozeThen = _migrate([before.key]).get_model("scans", "AlertSnooze")
        in_force = AlertSnoozeThen.objects.create(
            created_at=T0 - timedelta(hours=1), until=T0 + timedelta(hours=1)
        )
        # Made with an end already past (possible before the form checked it): it starts at its end.
        odd = AlertSnoozeThen.objects.create(created_at=T0, until=T0 - timedelta(hours=1), ended_at=T0)

        AlertSnoozeNow = _migrate([window]).get_model("scans", "AlertSnooze")

        starts = dict(AlertSnoozeNow.objects.values_list("pk", "starts_at"))
        assert starts == {in_force.pk: T0 - timedelta(hours=1), odd.pk: T0 - timedelta(hours=1)}
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
