"""Retention: nothing grows forever. Archive finished scans after a while and delete old history, in small batches.

Run hourly by beat (scans.tasks) and by `manage.py purge_history`. Every run works in batches of
RETENTION_BATCH_SIZE ids (one short `DELETE ... WHERE id IN (...)` or archive `UPDATE` each) and stops after
RETENTION_MAX_BATCHES per table, so it never holds long locks; what is left waits for the next run. Each batch
re-applies its conditions when it writes, so two runs at once, or a run that died half-way, are harmless: a row is
deleted (or archived) once, and counted by the run that did it.

What is kept, on purpose:
- Scans. Finished scans are archived after ARCHIVE_FINISHED_AFTER_DAYS (0: never) and stay, found by search and
  restorable, unless DELETE_ARCHIVED_AFTER_DAYS (0, the default: never) is set: then a scan archived that long ago
  is deleted with its timeline and alerts (CASCADE), except while one of its alerts still waits to be sent.
- Alerts waiting to be sent (pending): the outbox must deliver them whatever their age.
- Alerts whose row stops detection from writing them again (scans.alert_detection looks for an existing alert
  before it writes one): those about a scan that can still change (not found, stuck), an outage or a stale
  poller not over yet, a stuck scan whose "finished" notice is not written yet; and a follow-up ("finished",
  "recovered") while the alert it follows is kept, since deleting it alone would mail it again.
- Refresh runs an alert names (Alert.outage is PROTECT), and the latest run and latest successful run, which the
  poller's health reads: a poller stopped for longer than the retention must not look as if it never ran.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError
from django.db.models import Exists, Model, OuterRef, Q, QuerySet
from django.db.models.deletion import ProtectedError

from scans.alert_detection import ANNOUNCED, UNFINISHED, UNHEALTHY
from scans.audit import audit_expired
from scans.models import Alert, AuditEntry, RefreshRun, Scan, StatusChange
from scans.poller_health import REFRESH_SUCCEEDED
from scans.refresh import REFRESH_RUN_RETENTION
from scans.services import scans_archive

logger = logging.getLogger(__name__)

# An outage or stale episode counts as over once a healthy run this old came after it: by then the detection that
# runs after every cycle has written its "recovered" notice, which must not be lost to a purge that came first.
SETTLED_AFTER = timedelta(hours=1)
API_OPENERS = (Alert.Kind.API_DOWN, Alert.Kind.API_AUTH)
# Batches take the oldest rows first, by the column the age is judged on: with an index on it the batch is read
# from the index's start, not found by sorting every expired row (millions, the first time retention runs).
_AGE = {StatusChange: "observed_at", Alert: "created_at", RefreshRun: "started_at", AuditEntry: "created_at"}


@dataclass
class RetentionResult:
    """What one run did (or, dry, would do): rows per table, and whether a table had more than one run may do."""

    archived: int = 0
    deleted_scans: int = 0
    status_changes: int = 0
    alerts: int = 0
    refresh_runs: int = 0
    audit_entries: int = 0
    dry_run: bool = False
    unfinished: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The counts, for a task's result and the command's output."""
        return {
            "archived": self.archived,
            "deleted_scans": self.deleted_scans,
            "status_changes": self.status_changes,
            "alerts": self.alerts,
            "refresh_runs": self.refresh_runs,
            "audit_entries": self.audit_entries,
            "unfinished": self.unfinished,
        }


@dataclass(frozen=True)
class _Batching:
    size: int
    max_batches: int
    dry_run: bool


def history_cutoff(*, now: datetime) -> datetime:
    """History older than this is deleted: HISTORY_RETENTION_DAYS before `now`."""
    return now - timedelta(days=settings.HISTORY_RETENTION_DAYS)


def refresh_run_cutoff(*, now: datetime) -> datetime:
    """Refresh runs older than this are deleted: the refresh's own 7 days, or the history's days if fewer.

    One rule with scans.refresh, which forgets runs past REFRESH_RUN_RETENTION after every cycle: runs are the
    poller's health record (2,880 a day at a 30 s interval), not history anyone browses.
    """
    return now - min(REFRESH_RUN_RETENTION, timedelta(days=settings.HISTORY_RETENTION_DAYS))


def scans_to_archive(*, now: datetime) -> QuerySet[Scan]:
    """Tracked finished scans that ended ARCHIVE_FINISHED_AFTER_DAYS ago or more; none when the setting is 0.

    Ended by the API's end time, else by our last change of the scan, else by when tracking began.
    """
    days = settings.ARCHIVE_FINISHED_AFTER_DAYS
    if not days:
        return Scan.objects.none()
    cutoff = now - timedelta(days=days)
    # Three branches rather than Coalesce(), so PostgreSQL can answer each from an index on its column.
    ended = (
        Q(ended_at__lt=cutoff)
        | Q(ended_at__isnull=True, last_changed_at__lt=cutoff)
        | Q(ended_at__isnull=True, last_changed_at__isnull=True, created_at__lt=cutoff)
    )
    return Scan.objects.tracked().finished().filter(ended)


def archived_scans_expired(*, now: datetime) -> QuerySet[Scan]:
    """Scans archived DELETE_ARCHIVED_AFTER_DAYS ago or more with no alert waiting to be sent; none when 0."""
    days = settings.DELETE_ARCHIVED_AFTER_DAYS
    if not days:
        return Scan.objects.none()
    pending = Alert.objects.filter(scan=OuterRef("pk"), state=Alert.State.PENDING)
    return Scan.objects.filter(archived_at__lt=now - timedelta(days=days)).exclude(Exists(pending))


def status_changes_expired(*, now: datetime) -> QuerySet[StatusChange]:
    """Timeline steps observed before the history cutoff."""
    return StatusChange.objects.filter(observed_at__lt=history_cutoff(now=now))


def alerts_expired(*, now: datetime) -> QuerySet[Alert]:
    """Alerts created before the history cutoff that are no longer waiting to be sent and that detection would
    not write again once gone (see the module docstring)."""
    settled = now - SETTLED_AFTER
    later_runs = RefreshRun.objects.filter(started_at__gt=OuterRef("outage__started_at"), started_at__lt=settled)
    api_over = Exists(later_runs.exclude(outcome__in=UNFINISHED + UNHEALTHY))
    poller_over = Exists(later_runs.filter(REFRESH_SUCCEEDED))
    announced = Alert.objects.filter(state__in=ANNOUNCED)
    stuck_told = Exists(announced.filter(kind=Alert.Kind.STUCK, scan=OuterRef("scan")))
    resolved = Exists(Alert.objects.filter(kind=Alert.Kind.STUCK_RESOLVED, scan=OuterRef("scan")))
    outage_told = Exists(announced.filter(kind__in=API_OPENERS, outage=OuterRef("outage")))
    stale_told = Exists(announced.filter(kind=Alert.Kind.POLLER_STALE, outage=OuterRef("outage")))
    still_needed = (
        Q(scan__status__in=Scan.ACTIVE)
        | (Q(kind=Alert.Kind.STUCK, state__in=ANNOUNCED) & ~resolved)
        # Without an outage (alerts from before migration 0008) detection cannot recognise the alert anyway.
        | (Q(kind__in=API_OPENERS, outage__isnull=False) & ~api_over)
        | (Q(kind=Alert.Kind.POLLER_STALE, outage__isnull=False) & ~poller_over)
        | (Q(kind=Alert.Kind.STUCK_RESOLVED) & stuck_told)
        | (Q(kind=Alert.Kind.API_RECOVERED) & outage_told)
        | (Q(kind=Alert.Kind.POLLER_RECOVERED) & stale_told)
    )
    # Every state but pending, named: the (state, created_at) index answers it.
    settled_states = [state for state in Alert.State.values if state != Alert.State.PENDING]
    old = Alert.objects.filter(state__in=settled_states, created_at__lt=history_cutoff(now=now))
    return old.exclude(still_needed)


def refresh_runs_expired(*, now: datetime) -> QuerySet[RefreshRun]:
    """Refresh runs past their retention that no alert names, except the latest run and latest success."""
    keep = [
        pk
        for pk in (
            RefreshRun.objects.values_list("pk", flat=True).first(),
            RefreshRun.objects.filter(REFRESH_SUCCEEDED).values_list("pk", flat=True).first(),
        )
        if pk is not None
    ]
    runs = RefreshRun.objects.filter(started_at__lt=refresh_run_cutoff(now=now)).exclude(pk__in=keep)
    return runs.exclude(Exists(Alert.objects.filter(outage=OuterRef("pk"))))


def _delete_batch(eligible: QuerySet, ids: list[int]) -> int:
    """Delete the ids still eligible now (a concurrent run may have taken some); return how many went."""
    model: type[Model] = eligible.model
    try:
        _, per_model = eligible.filter(pk__in=ids).delete()
    except (ProtectedError, IntegrityError) as exc:
        # An alert named one of these runs between our look and our delete (a poller stale for longer than the
        # retention names its last old run): the whole batch stays, and the next look leaves that run out.
        logger.warning("retention: a batch of %d %s was kept: %s", len(ids), model._meta.verbose_name_plural, exc)
        return 0
    return per_model.get(model._meta.label, 0)


def _in_batches(eligible: QuerySet, apply, batching: _Batching, name: str, result: RetentionResult) -> int:
    """Apply `apply(ids)` to the eligible rows, oldest ids first, a bounded number of batches; return the total."""
    if batching.dry_run:
        return eligible.count()
    total = 0
    for _ in range(batching.max_batches):
        ids = list(eligible.order_by(_AGE.get(eligible.model, "pk")).values_list("pk", flat=True)[: batching.size])
        if not ids:
            return total
        total += apply(ids)
    if eligible.exists():
        result.unfinished.append(name)
    return total


def _batching(batch_size: int | None, max_batches: int | None, dry_run: bool) -> _Batching:
    return _Batching(
        size=batch_size or settings.RETENTION_BATCH_SIZE,
        max_batches=max_batches or settings.RETENTION_MAX_BATCHES,
        dry_run=dry_run,
    )


def finished_scans_archive(
    *, now: datetime, batch_size: int | None = None, max_batches: int | None = None, dry_run: bool = False
) -> RetentionResult:
    """Archive finished scans older than ARCHIVE_FINISHED_AFTER_DAYS (no-op when 0), in batches.

    Through scans_archive(), the operators' own action: archived_at set by the model's write(), never polled
    again, out of the default list.
    """
    result = RetentionResult(dry_run=dry_run)
    batching = _batching(batch_size, max_batches, dry_run)

    def archive(ids: list[int]) -> int:
        return scans_archive(scan_ids=ids, now=now)

    result.archived = _in_batches(scans_to_archive(now=now), archive, batching, "archived", result)
    return result


def archived_scans_delete(
    *,
    now: datetime,
    batch_size: int | None = None,
    max_batches: int | None = None,
    dry_run: bool = False,
    result: RetentionResult | None = None,
) -> RetentionResult:
    """Delete scans archived more than DELETE_ARCHIVED_AFTER_DAYS ago (no-op when 0), in batches.

    Their status changes, alerts and mutes go with them (CASCADE). The batch is smaller than for history rows:
    each scan takes its timeline and alerts along.
    """
    result = result or RetentionResult(dry_run=dry_run)
    batching = _batching(batch_size, max_batches, dry_run)
    batching = _Batching(size=max(1, batching.size // 4), max_batches=batching.max_batches, dry_run=dry_run)
    eligible = archived_scans_expired(now=now)

    def delete(ids: list[int]) -> int:
        return _delete_batch(eligible, ids)

    result.deleted_scans = _in_batches(eligible, delete, batching, "deleted_scans", result)
    return result


def history_purge(
    *,
    now: datetime,
    batch_size: int | None = None,
    max_batches: int | None = None,
    dry_run: bool = False,
    result: RetentionResult | None = None,
) -> RetentionResult:
    """Delete status changes, settled alerts, refresh runs and audit entries past their retention, in batches.

    Alerts go before runs: a run is deletable only once no alert names it. A dry run counts what is eligible
    now (a follow-up alert kept for the alert it follows becomes eligible at a later run).
    """
    result = result or RetentionResult(dry_run=dry_run)
    batching = _batching(batch_size, max_batches, dry_run)
    tables = [
        ("status_changes", status_changes_expired(now=now)),
        ("alerts", alerts_expired(now=now)),
        ("refresh_runs", refresh_runs_expired(now=now)),
        ("audit_entries", audit_expired(cutoff=history_cutoff(now=now))),
    ]
    for name, eligible in tables:

        def delete(ids: list[int], eligible: QuerySet = eligible) -> int:
            return _delete_batch(eligible, ids)

        setattr(result, name, _in_batches(eligible, delete, batching, name, result))
    return result


def retention_run(
    *, now: datetime, batch_size: int | None = None, max_batches: int | None = None, dry_run: bool = False
) -> RetentionResult:
    """One retention pass, what beat runs hourly: archive finished scans, delete long-archived ones (when set),
    then purge old history."""
    bounds = {"batch_size": batch_size, "max_batches": max_batches, "dry_run": dry_run}
    result = finished_scans_archive(now=now, **bounds)
    archived_scans_delete(now=now, result=result, **bounds)
    return history_purge(now=now, result=result, **bounds)
