"""Reads for bulk actions: the scans an action applies to, as one subquery, so its write is one statement.

A bulk action applies to the rows an operator ticked on the page, or to every scan matching the list's filters
("Select all N matching"). Either way the services get a `values_list("pk")` queryset, which the database reads
inside the UPDATE itself (`... WHERE id IN (SELECT id ...)`): no IDs travel through Python, however many match.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from scans.models import Scan
from scans.selectors import ScanFilters, _with_status, scans_matching

# At most this many scans per bulk action: an UPDATE of 10,000 rows holds their locks for well under a second on
# both databases, and an accidental "archive everything" of a large deployment is refused rather than done.
BULK_MAX = 10_000


@dataclass(frozen=True)
class ScanSelection:
    """The scans one bulk action applies to; `filters` is set when they were chosen as "all matching"."""

    scan_ids: QuerySet[Scan]
    count: int | None = None  # known when the form had to check it (the cap); the service returns the real one
    filters: ScanFilters | None = None


def scan_selection_rows(*, scans: QuerySet[Scan]) -> ScanSelection:
    """The rows ticked on the page (already resolved from their tracking IDs by the form)."""
    return ScanSelection(scan_ids=scans.values_list("pk", flat=True), count=len(scans))


def scan_selection_matching(*, filters: ScanFilters, now: datetime) -> ScanSelection:
    """Every scan the list shows for `filters` (its status chip included), on any page, counted now.

    The count is the database's, at the time of the action: never one the page or the client sent.
    """
    ids = _with_status(scans_matching(filters=filters), filters.status, now).values_list("pk", flat=True)
    return ScanSelection(scan_ids=ids, count=ids.count(), filters=filters)


def scan_selection_archived_at(*, archived_at: datetime) -> ScanSelection:
    """The scans one archive action archived, still archived: they all carry its time to the microsecond.

    Undo restores exactly these. A scan restored and archived again since carries the later time, so it is
    left alone: that second archive was someone's own decision.
    """
    together = Scan.objects.archived().filter(archived_at=archived_at)
    return ScanSelection(scan_ids=together.values_list("pk", flat=True))
