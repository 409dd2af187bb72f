"""The audit log: every operator action written with who, when and what, and the reads of the audit page.

Services record their own action (one call each) when they are told who acted: a user from a view, a name such as
"manage.py" from a command. System work (retention archiving finished scans, a refresh) passes no one and is not
an operator action, so it is not recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.db.models import QuerySet
from django.utils import timezone

from scans.models import AuditEntry, Scan

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    # Who acted: an account, or the name of a command ("manage.py"); None: the system, not recorded.
    Actor = AbstractBaseUser | str | None

AUDIT_BATCH_SIZE = 500
AUDIT_PER_PAGE = 50
# The newest entries shown on a scan's page; the audit page filtered by its ID has the rest.
SCAN_ENTRIES_SHOWN = 20
# The audit page's date presets: name -> how far back (None: all).
AUDIT_PERIODS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
AUDIT_PERIOD_CHOICES = (("", "All time"), ("1h", "Last hour"), ("24h", "Last 24 h"), ("7d", "Last 7 days"))


def audit_record(
    *,
    user: Actor,
    action: str,
    scans: QuerySet[Scan] | None = None,
    detail: str = "",
    now: datetime | None = None,
) -> int:
    """Write one entry per scan of `scans` (or one without a scan when None); return how many were written.

    Nothing is written when `user` is None (see the module docstring).
    """
    if user is None:
        return 0
    now = now or timezone.now()
    if isinstance(user, str):
        account, username = None, user
    else:
        account, username = user, user.get_username()
    common = {"user": account, "username": username[:150], "action": action, "detail": detail[:500]}
    if scans is None:
        AuditEntry.objects.create(created_at=now, **common)
        return 1
    entries = [
        AuditEntry(created_at=now, scan_id=pk, tracking_id=tracking_id, **common)
        for pk, tracking_id in scans.order_by("pk").values_list("pk", "tracking_id")
    ]
    AuditEntry.objects.bulk_create(entries, batch_size=AUDIT_BATCH_SIZE)
    return len(entries)


@dataclass(frozen=True)
class AuditFilters:
    """What the audit page shows; every field comes from the query string."""

    action: str = ""
    username: str = ""
    tracking_id: str = ""
    period: str = ""
    before: int | None = None  # keyset: entries older than this id (the "Older" link)


@dataclass
class AuditPage:
    """One page of entries, newest first, and the id the next (older) page starts before, if there is one."""

    entries: list[AuditEntry]
    older_than: int | None


def audit_page(*, filters: AuditFilters, now: datetime, per_page: int = AUDIT_PER_PAGE) -> AuditPage:
    """One page of the audit log, newest first, paged by id (keyset: as fast deep in the log as at its top)."""
    entries = AuditEntry.objects.all()
    if filters.action:
        entries = entries.filter(action=filters.action)
    if filters.username:
        entries = entries.filter(username=filters.username)
    if filters.tracking_id:
        entries = entries.filter(tracking_id=filters.tracking_id)
    back = AUDIT_PERIODS.get(filters.period)
    if back is not None:
        entries = entries.filter(created_at__gte=now - back)
    if filters.before is not None:
        entries = entries.filter(pk__lt=filters.before)
    rows = list(entries.only(*_SHOWN).order_by("-pk")[: per_page + 1])
    older_than = rows[per_page - 1].pk if len(rows) > per_page else None
    return AuditPage(entries=rows[:per_page], older_than=older_than)


_SHOWN = ("created_at", "username", "action", "tracking_id", "detail", "scan_id")


def audit_entries_for_scan(*, scan: Scan, limit: int = SCAN_ENTRIES_SHOWN) -> list[AuditEntry]:
    """The newest operator actions on one scan, newest first (its page's timeline)."""
    return list(AuditEntry.objects.filter(scan=scan).order_by("-pk")[:limit])


def audit_expired(*, cutoff: datetime) -> QuerySet[AuditEntry]:
    """Entries older than the history cutoff (scans.retention purges them with the rest of the history)."""
    return AuditEntry.objects.filter(created_at__lt=cutoff)
