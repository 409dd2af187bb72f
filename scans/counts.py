"""Counts per status without counting every scan: the trigger-kept tally (scans.models.ScanStatusTally) and the
stuck rule's two halves, each counted from its own small partial index."""

from __future__ import annotations

from datetime import datetime

from django.db import connection, transaction
from django.db.models import BooleanField, Count, ExpressionWrapper, Q, QuerySet, Sum

from scans.models import Scan, ScanStatusTally, stuck_condition
from scans.search import SearchTerms

# The status chips' keys for each status (scans.selectors.CHIPS, less "all" and "stuck").
STATUS_KEYS = {
    Scan.Status.NEW: "new",
    Scan.Status.PENDING: "pending",
    Scan.Status.IN_PROGRESS: "in_progress",
    Scan.Status.SUCCESS: "success",
    Scan.Status.FAILED: "failed",
    Scan.Status.UNKNOWN: "unknown",
    Scan.Status.NOT_FOUND: "not_found",
}


# Tally rows are folded into one per (status, tracked) pair once there are more than this many.
TALLY_COMPACT_ROWS = 2000


def tracked_status_counts(*, now: datetime) -> dict[str, int]:
    """The header's counts over every tracked scan: the trigger-kept tally, and a stuck count from one index.

    Same keys as scan_status_counts; no query reads the scans table's rows.
    """
    sums = _tally_sums()
    if any(row["n"] < 0 for row in sums):
        # Only a table emptied under the triggers' feet gets here (SQLite's flush may empty the tally before the
        # scans, whose deletes then count down from zero): count the scans once, and go on from there.
        scan_tally_rebuild()
        sums = _tally_sums()
    by_status = {row["status"]: row["n"] for row in sums if row["tracked"]}
    if sum(row["rows"] for row in sums) > TALLY_COMPACT_ROWS:
        scan_tally_rebuild(compact_only=True)
    counts = {key: by_status.get(status, 0) for status, key in STATUS_KEYS.items()}
    counts["all"] = sum(by_status.values())
    counts["stuck"] = stuck_count(Scan.objects.tracked(), now)
    return counts


def scan_status_counts(qs: QuerySet[Scan], *, now: datetime) -> dict[str, int]:
    """How many scans of `qs` are in each status, and stuck, in one query."""
    by_status = {key: Count("pk", filter=Q(status=status)) for status, key in STATUS_KEYS.items()}
    return qs.aggregate(all=Count("pk"), stuck=Count("pk", filter=stuck_condition(now)), **by_status)


def search_status_counts(*, terms: SearchTerms, now: datetime) -> dict[str, int]:
    """The counts of the tracked scans a search matches: those with a matching label per status from the label
    index (no row read), then those matched by tracking ID alone like any other filter."""
    by_label = Scan.objects.tracked().filter(label__in=terms.labels)
    per_status = dict(by_label.values_list("status").annotate(n=Count("*")).order_by())
    counts = {key: per_status.get(status, 0) for status, key in STATUS_KEYS.items()}
    counts["all"] = sum(per_status.values())
    counts["stuck"] = stuck_count(by_label, now)
    by_id_only = Scan.objects.tracked().filter(terms.tracking_id).exclude(label__in=terms.labels)
    for key, count in scan_status_counts(by_id_only, now=now).items():
        counts[key] += count
    return counts


def stuck_count(qs: QuerySet[Scan], now: datetime) -> int:
    """How many of `qs` are stuck, each half of the (disjoint) rule counted from its own partial index."""
    return sum(qs.filter(half).count() for half in stuck_condition(now).children)


def _tally_sums() -> list[dict]:
    return list(ScanStatusTally.objects.values("status", "tracked").annotate(n=Sum("delta"), rows=Count("pk")))


def scan_tally_rebuild(*, compact_only: bool = False) -> None:
    """Fold the tally's +1/-1 rows into one per (status, tracked) pair, or (not `compact_only`) recount them from
    the scans; the triggers' inserts wait meanwhile."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # inserts wait (briefly); reads go on
                cursor.execute(f"LOCK TABLE {ScanStatusTally._meta.db_table} IN EXCLUSIVE MODE")
        if compact_only:
            sums = ScanStatusTally.objects.values_list("status", "tracked").annotate(n=Sum("delta"))
        else:
            tracked = Q(archived_at__isnull=True)
            sums = Scan.objects.values_list("status").annotate(tracked=ExpressionWrapper(tracked, BooleanField()))
            sums = sums.annotate(n=Count("*")).values_list("status", "tracked", "n").order_by()
        sums = list(sums)
        ScanStatusTally.objects.all().delete()
        kept = [ScanStatusTally(status=status, tracked=tracked, delta=n) for status, tracked, n in sums if n]
        ScanStatusTally.objects.bulk_create(kept)
