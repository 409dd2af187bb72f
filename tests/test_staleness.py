"""Staleness is a state of its own: the poller's freshness (scans.poller_health), the header that shows it, and the
stale-poller alert sent once per episode with its recovery notice; real refresh cycles against the simulator, real
SMTP (aiosmtpd), the clock moved by time_machine."""

from datetime import UTC, datetime, timedelta

import pytest

from scans.alerts import alerts_run
from scans.models import Alert, RefreshRun, Scan
from scans.poller_health import poller_health
from scans.refresh import scans_refresh_due
from scans.services import scans_track
from tests.factories import make_refresh_run, make_scan
from tests.helpers import HTMX, header_poll_url, page_text, parse_html

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
STALE_SUBJECT = "[Scan dashboard STALE] not refreshed for 1 min"
RESUMED_SUBJECT = "[Scan dashboard refreshing again] scan statuses are current"


@pytest.fixture(autouse=True)
def _interval(settings):
    """Refresh every 30 s, stale after 3 intervals: 90 s."""
    settings.REFRESH_INTERVAL_SECONDS = 30
    settings.STALE_AFTER_INTERVALS = 3


@pytest.fixture
def at(time_machine):
    """Move the frozen clock to T0 + the given delta; returns that moment."""

    def move(**delta) -> datetime:
        moment = T0 + timedelta(**delta)
        time_machine.move_to(moment, tick=False)
        return moment

    move()
    return move


@pytest.fixture
def inbox(settings, smtp_server, protecto_settings):
    settings.ALERT_EMAILS = ["ops@example.com"]
    settings.SITE_URL = "https://scans.example.com"
    return smtp_server


def subjects(inbox) -> list[str]:
    return [message["Subject"] for message in inbox.messages]


# --- poller_health -----------------------------------------------------------------------------------------------


def test_a_poller_is_stale_one_second_past_three_intervals_without_success(at):
    make_scan(status=Scan.Status.PENDING, created_at=T0 - timedelta(hours=1))
    make_refresh_run(started_at=T0 - timedelta(seconds=5), finished_at=T0)

    assert not poller_health(now=at(seconds=90)).stale
    health = poller_health(now=at(seconds=91))
    assert (health.stale, health.state, health.age_text) == (True, "stale", "1 min")


def test_without_active_scans_an_idle_poller_is_never_stale(at):
    make_scan(status=Scan.Status.SUCCESS, created_at=T0 - timedelta(days=2))
    make_refresh_run(started_at=T0 - timedelta(days=1), finished_at=T0 - timedelta(days=1))

    assert poller_health(now=at()).state == "fresh"


def test_a_poller_that_never_succeeded_is_stale_once_the_oldest_active_scan_waited_too_long(at):
    make_scan(status=Scan.Status.PENDING, created_at=T0)

    assert poller_health(now=at(seconds=60)).state == "never"
    assert poller_health(now=at(seconds=91)).state == "stale"


@pytest.mark.parametrize(
    ("outcome", "answered", "counts"),
    [
        ("ok", 10, True),
        ("idle", 0, True),
        ("partial", 3, True),
        ("degraded", 3, True),
        ("partial", 0, False),
        ("failed", 0, False),
        ("auth_refused", 0, False),
        ("abandoned", 0, False),
    ],
)
def test_which_finished_cycles_count_as_a_successful_refresh(at, outcome, answered, counts):
    make_scan(status=Scan.Status.PENDING, created_at=T0 - timedelta(hours=1))
    make_refresh_run(started_at=T0 - timedelta(hours=1), finished_at=T0 - timedelta(hours=1))
    make_refresh_run(started_at=T0, finished_at=T0, outcome=outcome, ids_answered=answered)

    assert poller_health(now=at(seconds=60)).stale is not counts


def test_a_long_cycle_still_making_progress_is_not_a_stale_poller(at):
    make_scan(status=Scan.Status.PENDING, created_at=T0 - timedelta(hours=1))
    make_refresh_run(started_at=T0 - timedelta(hours=1), finished_at=T0 - timedelta(hours=1))
    run = make_refresh_run(
        started_at=T0, finished_at=None, outcome="running", last_progress_at=T0 + timedelta(minutes=5)
    )

    assert not poller_health(now=at(minutes=6)).stale
    assert poller_health(now=at(minutes=6, seconds=31)).stale  # its progress stopped too long ago
    run.delete()


def test_an_abandoned_cycle_is_no_verdict_on_the_api(at):
    make_refresh_run(started_at=T0, outcome="failed")
    make_refresh_run(started_at=T0 + timedelta(seconds=30), outcome="abandoned")

    assert poller_health(now=at(minutes=1)).api_state == "failed"


# --- The header --------------------------------------------------------------------------------------------------


def test_a_stale_header_is_red_and_says_for_how_long_not_that_the_api_fails(operator_client, at):
    make_scan(status=Scan.Status.PENDING, created_at=T0 - timedelta(hours=1))
    make_refresh_run(started_at=T0 - timedelta(seconds=5), finished_at=T0)
    at(minutes=4, seconds=10)

    header = parse_html(operator_client.get("/header/", **HTMX))
    box = header.select_one(".poller-health")

    assert "poller-failing" in box["class"]
    assert box.select_one("[data-poller=stale]").get_text(strip=True) == "Not refreshed for 4 min"
    assert "Failing" not in box.get_text()


def test_a_failing_api_with_cycles_running_says_failing(operator_client, at):
    make_scan(status=Scan.Status.PENDING, created_at=T0 - timedelta(hours=1))
    make_refresh_run(started_at=T0 - timedelta(seconds=60), finished_at=T0 - timedelta(seconds=60))
    make_refresh_run(started_at=T0, finished_at=T0, outcome="failed", error_text="HTTP 503")

    box = parse_html(operator_client.get("/header/", **HTMX)).select_one(".poller-health")

    assert box.select_one("[data-api=failed]").get_text(strip=True) == "Failing"
    assert box.select_one("[data-poller]") is None


def test_an_open_header_learns_the_poller_went_stale_though_nothing_else_changed(operator_client, at):
    make_scan(status=Scan.Status.PENDING, created_at=T0 - timedelta(hours=1))
    make_refresh_run(started_at=T0 - timedelta(seconds=5), finished_at=T0)
    poll = header_poll_url(operator_client.get("/header/", **HTMX))
    at(seconds=60)
    assert operator_client.get(poll, **HTMX).status_code == 204  # fresh, nothing changed

    at(seconds=91)
    stale = operator_client.get(poll, **HTMX)
    assert stale.status_code == 200 and "Not refreshed for 1 min" in page_text(stale)

    at(minutes=2, seconds=10)  # still stale, a minute older: the shown age moves on
    later = operator_client.get(header_poll_url(stale), **HTMX)
    assert "Not refreshed for 2 min" in page_text(later)


# --- The stale-poller alert --------------------------------------------------------------------------------------


def _working_poller(simulator, at) -> None:
    simulator.add_scan("scan-a", status="IN-PROGRESS", submitted_at=T0 - timedelta(minutes=5))
    scans_track(ids=["scan-a"])
    scans_refresh_due()
    alerts_run()


def test_a_poller_whose_cycles_stopped_is_alerted_once_then_once_when_it_resumes(inbox, simulator, at):
    _working_poller(simulator, at)
    at(seconds=90)
    alerts_run()
    assert inbox.messages == []

    for seconds in (91, 120, 600, 3600):  # the same episode, however long it lasts: one mail
        at(seconds=seconds)
        alerts_run()
    assert subjects(inbox) == [STALE_SUBJECT]
    assert (
        "Check the Celery worker, Celery beat and the broker"
        in inbox.messages[0].get_body(("plain",)).get_content()
    )

    at(seconds=3630)
    scans_refresh_due()  # the worker is back
    alerts_run()
    at(seconds=3660)
    alerts_run()
    assert subjects(inbox) == [STALE_SUBJECT, RESUMED_SUBJECT]
    stale = Alert.objects.get(kind=Alert.Kind.POLLER_STALE)
    assert Alert.objects.get(kind=Alert.Kind.POLLER_RECOVERED).outage_id == stale.outage_id


def test_a_second_stale_episode_is_a_second_alert(inbox, simulator, at):
    _working_poller(simulator, at)
    at(minutes=5)
    alerts_run()
    at(minutes=6)
    scans_refresh_due()
    alerts_run()
    at(minutes=10)
    alerts_run()

    assert subjects(inbox) == [
        "[Scan dashboard STALE] not refreshed for 5 min",
        RESUMED_SUBJECT,
        "[Scan dashboard STALE] not refreshed for 4 min",
    ]


def test_a_stale_episode_is_not_renamed_by_a_cycle_that_starts_and_hangs(inbox, simulator, at):
    _working_poller(simulator, at)
    at(minutes=3)
    alerts_run()
    RefreshRun.objects.create(started_at=at(minutes=4))  # a worker that takes the task and hangs at once
    at(minutes=8)
    alerts_run()

    assert subjects(inbox) == ["[Scan dashboard STALE] not refreshed for 3 min"]


def test_cycles_that_run_but_fail_are_the_api_alerts_business_not_a_stale_poller(inbox, simulator, at):
    _working_poller(simulator, at)
    simulator.configure(error_rate=1.0)
    for n in range(1, 8):
        at(seconds=30 * n)
        scans_refresh_due()
        alerts_run()

    # The subject carries the error's first line, cut to keep the subject within 100 characters.
    assert subjects(inbox) == [
        "[Protecto API DOWN] 3 refresh cycles failed in a row — Protecto answered HTTP 500: Internal server…"
    ]


def test_a_snoozed_stale_alert_has_no_resumed_notice(inbox, simulator, at):
    from scans.alerts import alerts_snooze

    _working_poller(simulator, at)
    alerts_snooze(until=T0 + timedelta(minutes=10))
    at(minutes=3)
    alerts_run()
    at(minutes=4)
    scans_refresh_due()
    alerts_run()

    assert inbox.messages == []
    assert Alert.objects.get().state == Alert.State.SUPPRESSED
