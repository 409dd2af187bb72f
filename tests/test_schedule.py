"""Adaptive polling: checks slow down the longer a scan stays unchanged, within the interval and the cap."""

from datetime import UTC, datetime, timedelta

import pytest

from scans.models import Scan
from scans.refresh import scans_refresh_due
from scans.schedule import next_check_delay
from scans.services import scans_track

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _intervals(settings):
    settings.REFRESH_INTERVAL_SECONDS = 30
    settings.REFRESH_MAX_INTERVAL_SECONDS = 300


@pytest.mark.parametrize(
    ("unchanged_for", "delay"),
    [
        (timedelta(0), 30),
        (timedelta(minutes=4, seconds=59), 30),
        (timedelta(minutes=5), 60),
        (timedelta(minutes=10), 120),
        (timedelta(minutes=15), 240),
        (timedelta(minutes=20), 300),
        (timedelta(days=400), 300),
    ],
)
def test_checks_slow_down_by_doubling_every_five_quiet_minutes_up_to_the_cap(unchanged_for, delay):
    assert next_check_delay(last_change=NOW - unchanged_for, now=NOW) == timedelta(seconds=delay)


def test_a_cap_at_the_interval_turns_adaptive_polling_off(settings):
    settings.REFRESH_MAX_INTERVAL_SECONDS = 30

    assert next_check_delay(last_change=NOW - timedelta(hours=3), now=NOW) == timedelta(seconds=30)


def test_a_change_in_the_future_of_a_skewed_clock_never_shortens_the_interval():
    assert next_check_delay(last_change=NOW + timedelta(minutes=3), now=NOW) == timedelta(seconds=30)


@pytest.mark.django_db
def test_a_refresh_checks_a_long_unchanged_scan_later_and_a_changed_one_at_the_interval(
    simulator, protecto_settings
):
    protecto_settings.REFRESH_MAX_INTERVAL_SECONDS = 300
    simulator.add_scan("quiet", status="IN-PROGRESS", started_at=NOW - timedelta(hours=1))
    simulator.add_scan("fresh", status="IN-PROGRESS", started_at=NOW - timedelta(hours=1))
    scans_track(ids=["quiet", "fresh"], now=NOW - timedelta(hours=1))
    scans_refresh_due(now=NOW - timedelta(minutes=16))  # both change: UNKNOWN -> IN-PROGRESS
    Scan.objects.filter(tracking_id="fresh").update(last_changed_at=NOW - timedelta(seconds=10))

    scans_refresh_due(now=NOW, ignore_schedule=True)  # nothing changed for either

    next_checks = dict(Scan.objects.values_list("tracking_id", "poll__next_check_at"))
    assert next_checks == {"quiet": NOW + timedelta(seconds=240), "fresh": NOW + timedelta(seconds=30)}
