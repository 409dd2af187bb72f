"""Reads for the pages: querysets the views render."""

from django.db.models import Count, QuerySet

from scans.models import RefreshRun, Scan


def scan_list_for_dashboard() -> QuerySet[Scan]:
    """Tracked scans, newest first, without the columns the list never shows."""
    return Scan.objects.filter(archived_at__isnull=True).defer("last_raw_answer")


def scan_status_counts() -> dict[str, int]:
    """How many tracked scans are in each status, every status present."""
    counts = dict.fromkeys(Scan.Status.values, 0)
    rows = scan_list_for_dashboard().order_by().values("status").annotate(n=Count("pk"))
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


def refresh_run_latest() -> RefreshRun | None:
    """The most recent refresh cycle, if any."""
    return RefreshRun.objects.first()
