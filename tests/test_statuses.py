"""Honest statuses: a scan no answer has named yet is "Not checked yet" (NEW), never "Unknown", which is kept for a
status the API sent that we do not recognise.

Answers come over real HTTP from the simulator and are written to the real database (SQLite, or PostgreSQL with
DATABASE_URL); pages are read through an HTML parser.
"""

import importlib
from datetime import UTC, datetime, timedelta

import pytest
from django.apps import apps

from scans.alerts import alerts_detect
from scans.counts import tracked_status_counts
from scans.models import Scan, ScanPoll, StatusChange
from scans.refresh import scans_refresh_due
from scans.services import scans_track
from tests.factories import make_scan
from tests.helpers import chip_counts, current_chip, get_list, listed_ids, parse_html

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def track(*ids: str) -> None:
    scans_track(ids=ids, now=T0 - timedelta(minutes=1))


def scan(tracking_id: str) -> Scan:
    return Scan.objects.select_related("poll").get(tracking_id=tracking_id)


def steps(tracking_id: str) -> list[tuple[str, str]]:
    changes = StatusChange.objects.filter(scan__tracking_id=tracking_id).order_by("observed_at", "pk")
    return list(changes.values_list("from_status", "to_status"))


def test_a_scan_just_tracked_is_not_checked_yet_and_is_polled():
    track("fresh-scan")

    assert scan("fresh-scan").status == Scan.Status.NEW
    assert scan("fresh-scan").get_status_display() == "Not checked yet"
    # It must stay polled, or it would never be checked at all.
    assert list(Scan.objects.active().values_list("tracking_id", flat=True)) == ["fresh-scan"]
    assert ScanPoll.objects.due(T0).filter(scan__tracking_id="fresh-scan").exists()


def test_the_first_answer_moves_a_new_scan_to_the_status_it_reports(simulator, protecto_settings):
    simulator.add_scan("answered", status="PENDING", submitted_at=T0 - timedelta(minutes=5))
    track("answered")

    scans_refresh_due(now=T0)

    assert scan("answered").status == Scan.Status.PENDING
    assert steps("answered") == [("NEW", "PENDING")]


def test_an_unrecognised_status_turns_a_new_scan_unknown_with_the_text_kept(simulator, protecto_settings):
    simulator.override_answer("odd", [{"tracking_id": "odd", "status": "QUEUED_FOR_RETRY"}])
    track("odd")

    scans_refresh_due(now=T0)

    assert (scan("odd").status, scan("odd").raw_status) == ("UNKNOWN", "QUEUED_FOR_RETRY")
    assert steps("odd") == [("NEW", "UNKNOWN")]


def test_an_answer_that_leaves_the_id_out_keeps_it_not_checked_yet(simulator, protecto_settings):
    simulator.configure(accept_unknown_ids=False)
    simulator.add_scan("listed", status="IN-PROGRESS", started_at=T0 - timedelta(minutes=1))
    track("listed", "left-out")

    scans_refresh_due(now=T0)

    left_out = scan("left-out")
    assert left_out.status == Scan.Status.NEW
    assert left_out.poll.last_checked_at is None
    assert steps("left-out") == []


def test_the_list_shows_not_checked_yet_apart_from_unknown_with_its_own_chip_and_filter(operator_client):
    make_scan("never-answered")
    make_scan("odd-answer", status=Scan.Status.UNKNOWN, raw_status="QUEUED_FOR_RETRY")

    everything = get_list(operator_client)
    badges = {
        row.select_one("a.mono").get_text(strip=True): row.select_one(".badge").get_text(strip=True)
        for row in parse_html(everything).select("table.scans tbody tr")
        if row.select_one("a.mono")
    }
    assert badges == {"never-answered": "Not checked yet", "odd-answer": "Unknown"}
    counts = chip_counts(everything)
    assert (counts["new"], counts["unknown"]) == (1, 1)

    only_new = get_list(operator_client, "?status=NEW")
    assert listed_ids(only_new) == ["never-answered"]
    assert current_chip(only_new) == "new"
    assert listed_ids(get_list(operator_client, "?status=UNKNOWN")) == ["odd-answer"]


def test_the_header_tally_counts_not_checked_yet_apart(now):
    make_scan("never-answered")
    make_scan("odd-answer", status=Scan.Status.UNKNOWN, raw_status="QUEUED_FOR_RETRY")

    counts = tracked_status_counts(now=now)

    assert (counts["new"], counts["unknown"], counts["all"]) == (1, 1, 2)


def test_the_scan_page_says_not_checked_yet(operator_client):
    make_scan("never-answered")

    response = operator_client.get("/scans/never-answered/")

    badge = parse_html(response).select_one(".badge-large")
    assert badge.get_text(strip=True) == "Not checked yet"
    assert "badge-new" in badge["class"]


def test_a_scan_never_answered_raises_no_alert(settings):
    settings.ALERT_EMAILS = ["ops@example.com"]
    make_scan("never-answered", created_at=T0 - timedelta(days=3))

    result = alerts_detect(now=T0)

    assert result.created == {}


def test_the_migration_turns_only_never_answered_unknown_scans_into_not_checked_yet():
    migration = importlib.import_module("scans.migrations.0016_not_checked_yet")
    make_scan("never-answered", status=Scan.Status.UNKNOWN)
    make_scan("odd-answer", status=Scan.Status.UNKNOWN, raw_status="QUEUED_FOR_RETRY")
    make_scan("answered-blank", status=Scan.Status.UNKNOWN, last_checked_at=T0)
    make_scan("pending", status=Scan.Status.PENDING, raw_status="PENDING")

    migration.never_answered_to_new(apps, None)

    statuses = dict(Scan.objects.values_list("tracking_id", "status"))
    assert statuses == {
        "never-answered": "NEW",
        "odd-answer": "UNKNOWN",
        "answered-blank": "UNKNOWN",
        "pending": "PENDING",
    }
