"""Retention (scans/retention.py): old history goes in bounded batches, and nothing goes that is still needed.

Real rows on the real database, times given explicitly (`now=` and past timestamps), no clock faked.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from scans.alert_detection import alerts_detect
from scans.models import Alert, RefreshRun, Scan, StatusChange
from scans.retention import (
    _delete_batch,
    finished_scans_archive,
    history_purge,
    refresh_runs_expired,
    retention_run,
)
from tests.factories import make_refresh_run, make_scan

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=200)  # past the default 180 days
RECENT = NOW - timedelta(days=10)


@pytest.fixture(autouse=True)
def _retention_defaults(settings):
    settings.HISTORY_RETENTION_DAYS = 180
    settings.ARCHIVE_FINISHED_AFTER_DAYS = 0
    settings.DELETE_ARCHIVED_AFTER_DAYS = 0
    settings.RETENTION_BATCH_SIZE = 1000
    settings.RETENTION_MAX_BATCHES = 10
    settings.ALERT_EMAILS = ["ops@example.com"]


def finished_scan(tracking_id: str, *, ended: datetime = OLD, status: str = Scan.Status.SUCCESS) -> Scan:
    return make_scan(
        tracking_id, status=status, ended_at=ended, last_changed_at=ended, created_at=ended, next_check_at=None
    )


def archived_scan(tracking_id: str, *, archived: datetime) -> Scan:
    scan = finished_scan(tracking_id, status=Scan.Status.FAILED)
    Scan.objects.filter(pk=scan.pk).update(archived_at=archived)
    return scan


def change(scan: Scan, at: datetime) -> StatusChange:
    return StatusChange.objects.create(
        scan=scan, from_status=Scan.Status.PENDING, to_status=Scan.Status.SUCCESS, observed_at=at
    )


def alert(kind: str, *, at: datetime = OLD, state: str = Alert.State.SENT, **fields) -> Alert:
    return Alert.objects.create(
        kind=kind, state=state, created_at=at, subject=f"{kind} {state}", body_text="-", body_html="-", **fields
    )


def test_status_changes_older_than_the_retention_are_deleted_and_recent_ones_kept():
    scan = finished_scan("s-1")
    old, recent = change(scan, OLD), change(scan, RECENT)

    result = history_purge(now=NOW)

    assert result.status_changes == 1
    assert list(StatusChange.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not StatusChange.objects.filter(pk=old.pk).exists()


def test_the_retention_follows_the_setting(settings):
    settings.HISTORY_RETENTION_DAYS = 5
    change(finished_scan("s-1"), RECENT)  # 10 days old: kept under 180, gone under 5

    assert history_purge(now=NOW).status_changes == 1
    assert not StatusChange.objects.exists()


def test_settled_alerts_older_than_the_retention_are_deleted_whatever_their_final_state():
    for state in (Alert.State.SENT, Alert.State.SUPPRESSED, Alert.State.NO_RECIPIENTS, Alert.State.IN_DIGEST):
        alert(Alert.Kind.FAILED, scan=finished_scan(f"s-{state}", status=Scan.Status.FAILED), state=state)
    recent = alert(Alert.Kind.FAILED, scan=finished_scan("s-new", status=Scan.Status.FAILED), at=RECENT)

    assert history_purge(now=NOW).alerts == 4
    assert list(Alert.objects.values_list("pk", flat=True)) == [recent.pk]


def test_pending_alerts_are_never_deleted_however_old():
    waiting = alert(Alert.Kind.FAILED, scan=finished_scan("s-1", status=Scan.Status.FAILED), state="pending")

    assert history_purge(now=NOW + timedelta(days=3650)).alerts == 0
    assert Alert.objects.filter(pk=waiting.pk).exists()


def test_an_alert_about_a_scan_still_not_found_is_kept_so_it_is_not_sent_again():
    scan = make_scan("lost-1", status=Scan.Status.NOT_FOUND, created_at=OLD, next_check_at=NOW)
    kept = alert(Alert.Kind.NOT_FOUND, scan=scan)

    history_purge(now=NOW)

    assert Alert.objects.filter(pk=kept.pk).exists()
    # Detection finds its alert and writes none: deleting it would have mailed ops about the same scan again.
    assert alerts_detect(now=NOW).created.get(Alert.Kind.NOT_FOUND, 0) == 0


def test_a_stuck_alert_waits_for_its_finished_notice_and_the_notice_waits_for_it():
    scan = finished_scan("slow-1")
    stuck = alert(Alert.Kind.STUCK, scan=scan)

    history_purge(now=NOW)
    assert Alert.objects.filter(pk=stuck.pk).exists()  # no "finished" notice yet: detection still owes one

    resolved = alert(Alert.Kind.STUCK_RESOLVED, scan=scan, at=OLD + timedelta(hours=1))
    # One batch per run shows the order: the stuck alert first, its notice only once nothing it follows is left.
    first = history_purge(now=NOW, max_batches=1)
    assert first.alerts == 1
    assert list(Alert.objects.values_list("pk", flat=True)) == [resolved.pk]
    # Had the notice gone while its stuck alert stayed, detection would mail "finished" a second time.
    assert alerts_detect(now=NOW).created == {}

    assert history_purge(now=NOW, max_batches=1).alerts == 1
    assert not Alert.objects.exists()
    assert alerts_detect(now=NOW).created == {}


def test_deleting_a_digest_leaves_the_alerts_it_carried_without_it():
    digest = alert(Alert.Kind.NOT_FOUND, is_digest=True)
    lost = make_scan("lost-1", status=Scan.Status.NOT_FOUND, next_check_at=NOW)
    member = alert(Alert.Kind.NOT_FOUND, scan=lost, state=Alert.State.IN_DIGEST, digest=digest)

    assert history_purge(now=NOW).alerts == 1  # the digest; the member is about a scan still not found

    member.refresh_from_db()
    assert member.digest_id is None
    assert not Alert.objects.filter(pk=digest.pk).exists()


def test_an_outage_over_for_long_loses_its_alerts_and_then_its_first_run():
    outage = make_refresh_run(outcome=RefreshRun.Outcome.FAILED, started_at=OLD)
    down = alert(Alert.Kind.API_DOWN, outage=outage)
    recovered = alert(Alert.Kind.API_RECOVERED, outage=outage, at=OLD + timedelta(hours=1))
    make_refresh_run(started_at=NOW - timedelta(hours=2))

    # One batch per run shows the order. The notice waits while the alert it follows is kept (detection would
    # mail "recovered" again), the run while any alert names it (Alert.outage is PROTECT).
    first = history_purge(now=NOW, max_batches=1)
    assert (first.alerts, first.refresh_runs) == (1, 0)
    assert list(Alert.objects.values_list("pk", flat=True)) == [recovered.pk]
    assert not Alert.objects.filter(pk=down.pk).exists()

    second = history_purge(now=NOW, max_batches=1)
    assert (second.alerts, second.refresh_runs) == (1, 1)
    assert not RefreshRun.objects.filter(pk=outage.pk).exists()


def test_an_outage_still_going_on_keeps_its_alert_and_run():
    outage = make_refresh_run(outcome=RefreshRun.Outcome.FAILED, started_at=OLD)
    down = alert(Alert.Kind.API_DOWN, outage=outage)
    make_refresh_run(outcome=RefreshRun.Outcome.FAILED, started_at=NOW - timedelta(hours=2))

    result = history_purge(now=NOW)

    assert (result.alerts, result.refresh_runs) == (0, 0)
    assert Alert.objects.filter(pk=down.pk).exists()
    assert RefreshRun.objects.filter(pk=outage.pk).exists()


def test_a_stale_poller_alert_stays_until_a_refresh_succeeded_after_it():
    episode = make_refresh_run(started_at=OLD)
    stale = alert(Alert.Kind.POLLER_STALE, outage=episode)
    make_refresh_run(outcome=RefreshRun.Outcome.FAILED, started_at=NOW - timedelta(hours=2))

    assert history_purge(now=NOW).alerts == 0  # still stale: deleting it would mail "refresh stopped" again

    make_refresh_run(started_at=NOW - timedelta(hours=1, minutes=30))
    assert history_purge(now=NOW).alerts == 1
    assert not Alert.objects.filter(pk=stale.pk).exists()


def test_refresh_runs_past_seven_days_go_except_the_latest_run_and_latest_success():
    old_success = make_refresh_run(started_at=NOW - timedelta(days=9))
    make_refresh_run(outcome=RefreshRun.Outcome.FAILED, started_at=NOW - timedelta(days=8, hours=1))
    old_failure = make_refresh_run(outcome=RefreshRun.Outcome.FAILED, started_at=NOW - timedelta(days=8))

    # A poller stopped for over a week: its last success and its last run are what its health is read from.
    assert history_purge(now=NOW).refresh_runs == 1
    assert set(RefreshRun.objects.values_list("pk", flat=True)) == {old_success.pk, old_failure.pk}

    recent = make_refresh_run(started_at=NOW - timedelta(days=1))
    assert history_purge(now=NOW).refresh_runs == 2
    assert list(RefreshRun.objects.values_list("pk", flat=True)) == [recent.pk]


def test_a_run_an_alert_names_after_the_batch_was_chosen_is_kept():
    make_refresh_run(started_at=NOW)
    runs = [
        make_refresh_run(outcome=RefreshRun.Outcome.FAILED, started_at=OLD + timedelta(minutes=n)) for n in (1, 2)
    ]
    eligible = refresh_runs_expired(now=NOW)
    chosen = list(eligible.values_list("pk", flat=True))
    # A detection elsewhere names the first as an outage's first run, between the look and the delete.
    alert(Alert.Kind.API_DOWN, outage=runs[0], at=NOW)

    assert _delete_batch(eligible, chosen) == 1

    assert RefreshRun.objects.filter(pk=runs[0].pk).exists()
    assert not RefreshRun.objects.filter(pk=runs[1].pk).exists()


def test_a_run_deletes_at_most_its_batches_and_the_next_run_continues():
    scan = finished_scan("s-1")
    for minute in range(7):
        change(scan, OLD + timedelta(minutes=minute))

    first = history_purge(now=NOW, batch_size=2, max_batches=2)
    assert first.status_changes == 4
    assert first.unfinished == ["status_changes"]
    assert StatusChange.objects.count() == 3

    second = history_purge(now=NOW, batch_size=2, max_batches=2)
    assert (second.status_changes, second.unfinished) == (3, [])
    assert history_purge(now=NOW, batch_size=2, max_batches=2).status_changes == 0


def test_the_batch_settings_bound_a_run(settings):
    settings.RETENTION_BATCH_SIZE = 3
    settings.RETENTION_MAX_BATCHES = 1
    scan = finished_scan("s-1")
    for minute in range(5):
        change(scan, OLD + timedelta(minutes=minute))

    assert history_purge(now=NOW).status_changes == 3


def test_archiving_is_off_by_default():
    scan = finished_scan("done-1", ended=NOW - timedelta(days=400))

    assert finished_scans_archive(now=NOW).archived == 0
    scan.refresh_from_db()
    assert scan.archived_at is None


def test_finished_scans_are_archived_after_the_set_days_and_nothing_else(settings):
    settings.ARCHIVE_FINISHED_AFTER_DAYS = 30
    old_done = finished_scan("done-old", ended=NOW - timedelta(days=31))
    old_failed = finished_scan("fail-old", ended=NOW - timedelta(days=40), status=Scan.Status.FAILED)
    fresh_done = finished_scan("done-new", ended=NOW - timedelta(days=29))
    running = make_scan("run-old", status=Scan.Status.IN_PROGRESS, created_at=NOW - timedelta(days=90))
    # No end time from the API: our own record of when it changed decides.
    unstamped = make_scan("done-unstamped", status=Scan.Status.SUCCESS, last_changed_at=NOW - timedelta(days=35))
    before = Scan.objects.get(pk=old_done.pk).updated_at

    assert finished_scans_archive(now=NOW).archived == 3

    archived = set(Scan.objects.archived().values_list("tracking_id", flat=True))
    assert archived == {old_done.tracking_id, old_failed.tracking_id, unstamped.tracking_id}
    assert fresh_done.tracking_id not in archived and running.tracking_id not in archived
    old_done.refresh_from_db()
    # Through the model's write(): open pages learn of it, and it is never polled.
    assert old_done.archived_at == NOW and old_done.updated_at > before and old_done.poll.next_check_at is None


def test_archived_scans_are_kept_with_their_timelines_until_the_history_retention(settings):
    settings.ARCHIVE_FINISHED_AFTER_DAYS = 30
    scan = finished_scan("done-1", ended=OLD)
    recent = change(scan, RECENT)

    result = retention_run(now=NOW)

    assert result.archived == 1
    assert Scan.objects.filter(pk=scan.pk).exists()
    assert StatusChange.objects.filter(pk=recent.pk).exists()


def test_archived_scans_are_kept_unless_deletion_is_set(settings):
    scan = archived_scan("done-1", archived=OLD)

    assert retention_run(now=NOW).deleted_scans == 0
    assert Scan.objects.filter(pk=scan.pk).exists()


def test_scans_archived_long_enough_are_deleted_with_their_history_unless_an_alert_waits(settings):
    settings.DELETE_ARCHIVED_AFTER_DAYS = 30
    gone = archived_scan("done-gone", archived=NOW - timedelta(days=31))
    change(gone, RECENT)
    alert(Alert.Kind.FAILED, scan=gone, at=RECENT)
    recently = archived_scan("done-recent", archived=NOW - timedelta(days=29))
    waiting = archived_scan("done-waiting", archived=NOW - timedelta(days=31))
    alert(Alert.Kind.FAILED, scan=waiting, state=Alert.State.PENDING)
    tracked = finished_scan("done-tracked", ended=OLD)

    assert retention_run(now=NOW).deleted_scans == 1

    assert set(Scan.objects.values_list("pk", flat=True)) == {recently.pk, waiting.pk, tracked.pk}
    assert not StatusChange.objects.filter(scan_id=gone.pk).exists()
    assert not Alert.objects.filter(scan_id=gone.pk).exists()


def test_a_second_run_finds_nothing_left_to_do(settings):
    settings.ARCHIVE_FINISHED_AFTER_DAYS = 30
    settings.DELETE_ARCHIVED_AFTER_DAYS = 30
    scan = finished_scan("done-1", status=Scan.Status.FAILED)
    change(scan, OLD)
    alert(Alert.Kind.FAILED, scan=scan)
    make_refresh_run(started_at=OLD)
    make_refresh_run(started_at=NOW)
    retention_run(now=NOW)

    again = retention_run(now=NOW)

    assert again.as_dict() == {
        "archived": 0,
        "deleted_scans": 0,
        "status_changes": 0,
        "alerts": 0,
        "refresh_runs": 0,
        "audit_entries": 0,
        "unfinished": [],
    }


def test_a_dry_run_counts_and_changes_nothing(settings):
    settings.ARCHIVE_FINISHED_AFTER_DAYS = 30
    scan = finished_scan("done-1", status=Scan.Status.FAILED)
    change(scan, OLD)
    alert(Alert.Kind.FAILED, scan=scan)

    result = retention_run(now=NOW, dry_run=True)

    assert (result.archived, result.status_changes, result.alerts) == (1, 1, 1)
    assert (StatusChange.objects.count(), Alert.objects.count(), Scan.objects.archived().count()) == (1, 1, 0)


def test_the_command_prints_the_counts_and_supports_dry_run():
    scan = finished_scan("done-1", ended=datetime.now(UTC) - timedelta(days=400))
    change(scan, datetime.now(UTC) - timedelta(days=400))
    change(scan, datetime.now(UTC) - timedelta(days=300))

    dry = StringIO()
    call_command("purge_history", "--dry-run", stdout=dry)
    assert "would delete" in dry.getvalue() and "status changes 2" in dry.getvalue()
    assert StatusChange.objects.count() == 2

    done = StringIO()
    call_command("purge_history", "--batch-size", "1", "--max-batches", "1", stdout=done)
    assert "status changes 1" in done.getvalue() and "more left in status_changes" in done.getvalue()
    assert StatusChange.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_delete_each_row_once_and_fail_nothing():
    scan = finished_scan("s-1")
    StatusChange.objects.bulk_create(
        StatusChange(scan=scan, from_status="PENDING", to_status="SUCCESS", observed_at=OLD) for _ in range(300)
    )
    counts: list[int] = []
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def run() -> None:
        try:
            start.wait()
            counts.append(history_purge(now=NOW, batch_size=20, max_batches=100).status_changes)
        except BaseException as exc:  # a thread's exception would otherwise vanish
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert failures == []
    assert sum(counts) == 300
    assert not StatusChange.objects.exists()


def test_the_hourly_task_runs_retention_and_reports_its_counts(settings):
    from scans.tasks import purge_history

    settings.HISTORY_RETENTION_DAYS = 180
    old = make_scan(status="SUCCESS")
    StatusChange.objects.create(
        scan=old, from_status="PENDING", to_status="SUCCESS", observed_at=timezone.now() - timedelta(days=400)
    )

    counts = purge_history.apply().get()

    assert not StatusChange.objects.exists()
    assert counts["status_changes"] == 1
