"""The audit log: every operator action is recorded with who, when and what; shown on the scan's page and on the
audit page with its filters and keyset pages; commands are named, system work is not recorded; purged with the
rest of the history."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from scans.audit import audit_record
from scans.models import AlertMute, AlertSnooze, AuditEntry, Scan
from scans.retention import history_purge
from scans.services import scans_archive
from tests.factories import make_refreshed_scan
from tests.helpers import page_text, parse_html

pytestmark = pytest.mark.django_db

AUDIT = "/audit/"
SCAN_ID = "47882682-9f38-4f45-afec-daadaa1b230b"


def entries() -> list[tuple[str, str, str, str]]:
    """(who, action, tracking ID, detail) of every entry, oldest first."""
    return list(AuditEntry.objects.order_by("pk").values_list("username", "action", "tracking_id", "detail"))


def audit_rows(response) -> list[list[str]]:
    """The audit table's rows as the cells' texts (When left out)."""
    rows = parse_html(response).select("table.audit tbody tr")
    return [
        [cell.get_text(" ", strip=True) for cell in row.select("td")[1:]]
        for row in rows
        if not row.select(".empty")
    ]


def test_adding_scans_on_the_add_page_records_one_entry_per_scan_added(operator_client):
    operator_client.post("/add/", {"ids": f"{SCAN_ID}\nsecond-scan-id", "label": "Q3 audit"})

    assert entries() == [
        ("olivia", "add", SCAN_ID, "label: Q3 audit"),
        ("olivia", "add", "second-scan-id", "label: Q3 audit"),
    ]
    assert AuditEntry.objects.filter(user__username="olivia", scan__tracking_id=SCAN_ID).exists()


def test_manage_py_track_is_recorded_as_the_command():
    call_command("track", SCAN_ID, stdout=StringIO(), stderr=StringIO())

    assert entries() == [("manage.py", "add", SCAN_ID, "")]
    assert AuditEntry.objects.get().user is None


def test_each_action_on_a_scan_page_is_recorded_with_who_and_what(operator_client):
    make_refreshed_scan(SCAN_ID, Scan.Status.IN_PROGRESS)
    base = f"/scans/{SCAN_ID}"

    operator_client.post(f"{base}/refresh/")
    operator_client.post(f"{base}/label/", {"label": "HR share"})
    operator_client.post(f"{base}/label/", {"label": ""})
    operator_client.post(f"{base}/mute/")
    operator_client.post(f"{base}/unmute/")
    operator_client.post(f"{base}/archive/")
    operator_client.post(f"{base}/restore/")

    assert entries() == [
        ("olivia", "refresh", SCAN_ID, ""),
        ("olivia", "label", SCAN_ID, "label: HR share"),
        ("olivia", "label", SCAN_ID, "label cleared"),
        ("olivia", "mute", SCAN_ID, ""),
        ("olivia", "unmute", SCAN_ID, ""),
        ("olivia", "archive", SCAN_ID, ""),
        ("olivia", "restore", SCAN_ID, ""),
    ]


def test_an_action_that_changes_nothing_records_nothing(operator_client):
    make_refreshed_scan(SCAN_ID, Scan.Status.SUCCESS)

    operator_client.post(f"/scans/{SCAN_ID}/refresh/")  # final: nothing to refresh
    operator_client.post(f"/scans/{SCAN_ID}/restore/")  # not archived
    operator_client.post(f"/scans/{SCAN_ID}/unmute/")  # not muted

    assert entries() == []


def test_a_bulk_action_records_each_scan_it_changed(operator_client):
    for tracking_id in ("bulk-a", "bulk-b", "bulk-c"):
        make_refreshed_scan(tracking_id, Scan.Status.SUCCESS)

    operator_client.post("/bulk/archive/", {"ids": ["bulk-a", "bulk-c"]})

    assert entries() == [("olivia", "archive", "bulk-a", ""), ("olivia", "archive", "bulk-c", "")]


def test_label_mutes_snoozes_and_their_ends_are_recorded_without_a_scan(operator_client):
    operator_client.post("/alerts/mutes/", {"label": "Payroll EU"})
    operator_client.post(f"/alerts/mutes/{AlertMute.objects.get().pk}/delete/")
    operator_client.post("/alerts/snooze/", {"preset": "1h", "reason": "DB upgrade"})
    operator_client.post(f"/alerts/snooze/{AlertSnooze.objects.get().pk}/end/")

    recorded = entries()
    assert [(who, action, tracking_id) for who, action, tracking_id, _ in recorded] == [
        ("olivia", "mute", ""),
        ("olivia", "unmute", ""),
        ("olivia", "snooze", ""),
        ("olivia", "end_snooze", ""),
    ]
    assert recorded[0][3] == recorded[1][3] == "label: Payroll EU"
    assert recorded[2][3].endswith("UTC; DB upgrade")
    assert recorded[3][3].startswith("snooze until ")


def test_acknowledging_is_recorded_with_its_note(operator_client):
    make_refreshed_scan(SCAN_ID, Scan.Status.FAILED, error="Quota exceeded")

    operator_client.post(f"/scans/{SCAN_ID}/acknowledge/", {"note": "ticket OPS-123"})

    assert entries() == [("olivia", "acknowledge", SCAN_ID, "note: ticket OPS-123")]


def test_system_work_such_as_retention_archiving_is_not_an_operator_action():
    scan = make_refreshed_scan(SCAN_ID, Scan.Status.SUCCESS)

    assert scans_archive(scan_ids=[scan.pk]) == 1
    assert entries() == []


def test_the_scan_page_shows_its_actions_newest_first(operator_client):
    make_refreshed_scan(SCAN_ID, Scan.Status.FAILED, error="Quota exceeded")
    operator_client.post(f"/scans/{SCAN_ID}/label/", {"label": "HR share"})
    operator_client.post(f"/scans/{SCAN_ID}/acknowledge/", {"note": "OPS-7"})

    steps = parse_html(operator_client.get(f"/scans/{SCAN_ID}/")).select(".audit-timeline li")

    texts = [step.get_text(" ", strip=True) for step in steps]
    assert "Acknowledge by olivia — note: OPS-7" in texts[0]
    assert "Label by olivia — label: HR share" in texts[1]


def test_the_audit_page_lists_entries_newest_first_for_a_viewer_too(viewer_client, operator):
    scan = make_refreshed_scan(SCAN_ID, Scan.Status.FAILED)
    audit_record(user=operator, action="label", scans=Scan.objects.filter(pk=scan.pk), detail="label: a")
    audit_record(user="manage.py", action="add", scans=Scan.objects.filter(pk=scan.pk))

    response = viewer_client.get(AUDIT)

    assert response.status_code == 200
    assert audit_rows(response) == [
        ["manage.py", "Add", SCAN_ID[:23] + "…", "—"],
        ["olivia", "Label", SCAN_ID[:23] + "…", "label: a"],
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"action": "archive"}, ["b-archive"]),
        ({"user": "manage.py"}, ["c-add"]),
        ({"tracking_id": "a-label"}, ["a-label"]),
        ({"period": "1h"}, ["b-archive", "c-add"]),
        ({"period": "7d"}, ["a-label", "b-archive", "c-add"]),
    ],
)
def test_the_audit_page_filters_by_action_who_tracking_id_and_period(operator_client, operator, query, expected):
    now = timezone.now()
    for tracking_id, user, action, ago in (
        ("a-label", operator, "label", timedelta(hours=3)),
        ("b-archive", operator, "archive", timedelta(minutes=5)),
        ("c-add", "manage.py", "add", timedelta(minutes=1)),
    ):
        scans = Scan.objects.filter(pk=make_refreshed_scan(tracking_id, Scan.Status.SUCCESS).pk)
        audit_record(user=user, action=action, scans=scans, now=now - ago)

    rows = audit_rows(operator_client.get(AUDIT, query))

    assert sorted(row[2] for row in rows) == expected


def test_a_bad_filter_is_reported_and_ignored(operator_client, operator):
    audit_record(user=operator, action="snooze", detail="x")

    for query, message in (
        ({"tracking_id": "bad id"}, "That is not a tracking ID: it contains ' '"),
        ({"tracking_id": "bad\x00"}, "That is not a tracking ID: it contains NUL"),
        ({"action": "explode"}, "Unknown action explode ignored."),
    ):
        response = operator_client.get(AUDIT, query)
        assert message in page_text(response)
        assert len(audit_rows(response)) == 1


def test_the_audit_page_pages_by_keyset_from_newest_to_oldest(operator_client, operator, settings):
    for n in range(55):
        audit_record(user=operator, action="snooze", detail=f"entry {n}")

    first = operator_client.get(AUDIT)
    older = parse_html(first).select_one('a[rel="next"]')["href"]
    second = operator_client.get(f"{AUDIT}{older}")

    assert [row[3] for row in audit_rows(first)][:2] == ["entry 54", "entry 53"]
    assert [row[3] for row in audit_rows(second)] == [f"entry {n}" for n in range(4, -1, -1)]
    assert parse_html(second).select_one('a[rel="next"]') is None
    assert parse_html(second).select_one('a[data-page="newest"]') is not None


def test_the_audit_page_needs_a_login(client):
    assert client.get(AUDIT).status_code == 302


def test_old_audit_entries_are_purged_with_the_history(settings, operator):
    settings.HISTORY_RETENTION_DAYS = 30
    now = timezone.now()
    audit_record(user=operator, action="snooze", detail="old", now=now - timedelta(days=31))
    audit_record(user=operator, action="snooze", detail="recent", now=now - timedelta(days=29))

    result = history_purge(now=now)

    assert result.audit_entries == 1
    assert list(AuditEntry.objects.values_list("detail", flat=True)) == ["recent"]


def test_an_entry_outlives_its_scan_and_its_user(operator):
    scan = make_refreshed_scan(SCAN_ID, Scan.Status.SUCCESS)
    audit_record(user=operator, action="archive", scans=Scan.objects.filter(pk=scan.pk))

    scan.delete()
    operator.delete()

    assert entries() == [("olivia", "archive", SCAN_ID, "")]
