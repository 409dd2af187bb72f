"""Each scan's poll bookkeeping lives in its own narrow row (scans.models.ScanPoll), added by the database with
the scan however it is inserted, so no scan is ever left unpolled and finished ones are never due."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from scans.models import Scan, ScanPoll
from scans.services import scans_archive, scans_restore, scans_track

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def test_every_inserted_scan_gets_a_poll_row_due_unless_final_or_archived():
    Scan.objects.bulk_create(
        [
            Scan(tracking_id="new", created_at=T0),
            Scan(tracking_id="running", status=Scan.Status.IN_PROGRESS, created_at=T0),
            Scan(tracking_id="done", status=Scan.Status.SUCCESS, created_at=T0),
            Scan(tracking_id="failed", status=Scan.Status.FAILED, created_at=T0),
            Scan(tracking_id="shelved", status=Scan.Status.PENDING, created_at=T0, archived_at=T0),
        ]
    )

    polls = dict(ScanPoll.objects.values_list("scan__tracking_id", "next_check_at"))

    assert polls == {"new": T0, "running": T0, "done": None, "failed": None, "shelved": None}
    assert set(ScanPoll.objects.due(T0).values_list("scan__tracking_id", flat=True)) == {"new", "running"}


def test_tracking_makes_a_scan_due_at_once():
    scans_track(ids=["fresh-1"], now=T0)

    poll = ScanPoll.objects.get(scan__tracking_id="fresh-1")

    assert (poll.next_check_at, poll.claim_token, poll.last_checked_at) == (T0, "", None)


def test_archiving_stops_the_polls_and_restoring_resumes_them_for_unfinished_scans():
    scans_track(ids=["running", "done"], now=T0)
    Scan.objects.filter(tracking_id="done").update(status=Scan.Status.SUCCESS)
    ScanPoll.objects.filter(scan__tracking_id="done").update(next_check_at=None)
    ids = list(Scan.objects.values_list("pk", flat=True))

    scans_archive(scan_ids=ids, now=T0)
    archived = dict(ScanPoll.objects.values_list("scan__tracking_id", "next_check_at"))
    scans_restore(scan_ids=ids, now=T0 + timedelta(hours=1))
    restored = dict(ScanPoll.objects.values_list("scan__tracking_id", "next_check_at"))

    assert archived == {"running": None, "done": None}
    assert restored == {"running": T0 + timedelta(hours=1), "done": None}


def test_deleting_a_scan_deletes_its_poll_row():
    scans_track(ids=["gone"], now=T0)

    Scan.objects.filter(tracking_id="gone").delete()

    assert not ScanPoll.objects.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="xmin is PostgreSQL's row version")
def test_a_claim_and_an_unchanged_poll_leave_the_scan_row_version_alone(simulator, protecto_settings):
    from scans.refresh import scans_refresh_due

    simulator.add_scan("steady", status="IN-PROGRESS")
    scans_track(ids=["steady"], now=T0 - timedelta(minutes=1))
    scans_refresh_due(now=T0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT xmin::text FROM scans_scan")
        before = cursor.fetchone()[0]

    scans_refresh_due(now=T0 + timedelta(seconds=30))

    with connection.cursor() as cursor:
        cursor.execute("SELECT xmin::text FROM scans_scan")
        assert cursor.fetchone()[0] == before  # not one new version of the wide row
    assert ScanPoll.objects.get().last_checked_at == T0 + timedelta(seconds=30)
