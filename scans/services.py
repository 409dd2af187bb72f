"""Writes: registering tracking IDs and refreshing their statuses from Protecto."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from scans.audit import audit_record
from scans.models import AuditEntry, Scan, ScanPoll, tracking_id_problem

if TYPE_CHECKING:
    from scans.audit import Actor

logger = logging.getLogger(__name__)


@dataclass
class TrackResult:
    """What became of each ID given to scans_track."""

    added: list[str] = field(default_factory=list)
    already_tracked: list[str] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)  # given again in the same call: only the first counts
    rejected: list[tuple[str, str]] = field(default_factory=list)


def scans_track(
    *, ids: Iterable[str], label: str = "", now: datetime | None = None, user: Actor = None
) -> TrackResult:
    """Start tracking the valid IDs; report repeats, already tracked IDs and rejects without failing the others.

    `user`: who added them, for the audit log (an account, or "manage.py"); None records nothing.
    """
    now = now or timezone.now()
    result = TrackResult()
    wanted: dict[str, None] = {}
    for raw in ids:
        tracking_id = raw.strip()
        problem = tracking_id_problem(tracking_id)
        if problem:
            result.rejected.append((raw, problem))
        elif tracking_id in wanted:
            result.repeated.append(tracking_id)
        else:
            wanted[tracking_id] = None
    existing = set(Scan.objects.filter(tracking_id__in=list(wanted)).values_list("tracking_id", flat=True))
    new = [tracking_id for tracking_id in wanted if tracking_id not in existing]
    result.already_tracked.extend(tracking_id for tracking_id in wanted if tracking_id in existing)
    # ignore_conflicts: a concurrent registration of the same ID must not fail this whole call.
    Scan.objects.bulk_create(
        [
            Scan(
                tracking_id=tracking_id,
                label=label.strip()[:200],
                created_at=now,  # also its first check, on the poll row the database adds (scans.models.ScanPoll)
                updated_at=now,
            )
            for tracking_id in new
        ],
        ignore_conflicts=True,
        batch_size=500,
    )
    result.added.extend(new)
    if new:
        detail = f"label: {label.strip()[:200]}" if label.strip() else ""
        added = Scan.objects.filter(tracking_id__in=new)
        audit_record(user=user, action=AuditEntry.Action.ADD, scans=added, detail=detail, now=now)
    return result


def scans_track_entries(*, entries: Iterable[tuple[str, str]], label: str = "", user: Actor = None) -> TrackResult:
    """Track (tracking ID, label) pairs, e.g. from a CSV; an entry without a label takes `label`."""
    by_label: dict[str, list[str]] = {}
    for tracking_id, entry_label in entries:
        by_label.setdefault(entry_label.strip() or label, []).append(tracking_id)
    merged = TrackResult()
    for group_label, ids in by_label.items():
        result = scans_track(ids=ids, label=group_label, user=user)
        merged.added += result.added
        merged.already_tracked += result.already_tracked
        merged.repeated += result.repeated
        merged.rejected += result.rejected
    return merged


# A page that queues a task waits at most this long for the broker: the action itself never depends on it.
WEB_PUBLISH_TIMEOUT_SECONDS = 1.0


@dataclass
class QueueRequest:
    """A task asked of the workers from a request; `sent` is known once the transaction has committed.

    None means not attempted yet (the transaction is still open), False that the broker could not take it: the
    work then waits for the next scheduled cycle.
    """

    sent: bool | None = None

    @property
    def unreachable(self) -> bool:
        """True when the broker refused or timed out: say "next cycle", not "now"."""
        return self.sent is False


@dataclass
class RefreshRequest:
    """What scans_refresh_now did: how many scans it made due now and whether a worker was asked to run."""

    count: int
    queue: QueueRequest


def scans_refresh_now(
    *, scan_ids: Iterable[int], now: datetime | None = None, user: Actor = None
) -> RefreshRequest:
    """Make the given non-final, non-archived scans due now and ask a worker to poll them.

    The poll itself runs in the worker (the same refresh the beat runs), so a slow API never holds a page; a
    broker that cannot take the message leaves the scans due for the next scheduled cycle.
    """
    now = now or timezone.now()
    wanted = Scan.objects.active().filter(pk__in=_ids(scan_ids))
    count = ScanPoll.objects.filter(scan__in=wanted, claim_token="").update(next_check_at=now)
    if count:
        audit_record(user=user, action=AuditEntry.Action.REFRESH, scans=wanted, now=now)
    return RefreshRequest(count=count, queue=scans_request_refresh() if count else QueueRequest())


def scans_request_refresh() -> QueueRequest:
    """Ask a worker to run a refresh as soon as the current transaction commits.

    If the broker cannot take the message within about a second the scans are still due, so the next beat polls
    them: log, never fail or hold the request.
    """
    return _queue_on_commit("refresh_due_scans")


def request_alert_send() -> QueueRequest:
    """Ask a worker to send due alerts once the current transaction commits (never fails the request)."""
    return _queue_on_commit("send_alerts")


def _queue_on_commit(name: str) -> QueueRequest:
    request = QueueRequest()

    def send() -> None:
        request.sent = _send_task(name)

    transaction.on_commit(send)
    return request


def _send_task(name: str) -> bool:
    """Publish one task on a short-lived connection with short timeouts and no retry; True if the broker took it.

    The app's pooled connection keeps the workers' longer broker timeouts and Celery's publish retries, which would
    hold a page for seconds (Redis refusing) or until the socket timeout (Redis hanging).
    """
    from dashboard.celery import app
    from scans import tasks

    short = {
        "socket_timeout": WEB_PUBLISH_TIMEOUT_SECONDS,
        "socket_connect_timeout": WEB_PUBLISH_TIMEOUT_SECONDS,
        "retry_on_timeout": False,
        "max_retries": 0,
    }
    try:
        connection = app.connection_for_write(transport_options=short, connect_timeout=WEB_PUBLISH_TIMEOUT_SECONDS)
        with connection as conn:
            getattr(tasks, name).apply_async(connection=conn, retry=False)
    except Exception:
        logger.warning("could not queue %s; the next scheduled run will do it", name, exc_info=True)
        return False
    return True


def scans_queue_refresh_batches(*, run_id: int, tokens: list[str], queue: str | None = None) -> int:
    """Send one refresh_batch task per claimed batch (on `queue`, else the default); return how many were sent.

    Called from a worker, so the app's own connection and retries are right here. A batch the broker would not
    take is released at once (due again, polled by the next tick) rather than frozen until its lease runs out.
    """
    from scans import tasks

    sent = 0
    for token in tokens:
        try:
            tasks.refresh_batch.apply_async(args=[run_id, token], queue=queue)
            sent += 1
        except Exception:
            logger.warning("could not queue refresh batch %s; released for the next tick", token, exc_info=True)
            ScanPoll.objects.filter(claim_token=token).update(claim_token="", next_check_at=timezone.now())
    return sent


def scans_archive(*, scan_ids: Iterable[int], now: datetime | None = None, user: Actor = None) -> int:
    """Stop tracking: archived scans leave the default list and are never polled. Return how many changed."""
    now = now or timezone.now()
    with transaction.atomic():
        archived = list(Scan.objects.tracked().filter(pk__in=_ids(scan_ids)).values_list("pk", flat=True))
        ScanPoll.objects.filter(scan__in=archived).update(next_check_at=None, claim_token="")
        audit_record(
            user=user, action=AuditEntry.Action.ARCHIVE, scans=Scan.objects.filter(pk__in=archived), now=now
        )
        return Scan.objects.filter(pk__in=archived).write(archived_at=now)


def scans_restore(*, scan_ids: Iterable[int], now: datetime | None = None, user: Actor = None) -> int:
    """Track archived scans again; the non-final ones are polled at the next refresh. Return how many."""
    now = now or timezone.now()
    archived = Scan.objects.archived().filter(pk__in=_ids(scan_ids))
    with transaction.atomic():
        # What was not final is polled at the next refresh.
        ScanPoll.objects.filter(scan__in=archived.exclude(status__in=Scan.TERMINAL)).update(next_check_at=now)
        restored = list(archived.values_list("pk", flat=True))
        audit_record(
            user=user, action=AuditEntry.Action.RESTORE, scans=Scan.objects.filter(pk__in=restored), now=now
        )
        return Scan.objects.archived().filter(pk__in=restored).write(archived_at=None)


def scans_set_label(*, scan_ids: Iterable[int], label: str, user: Actor = None) -> int:
    """Set (or clear, with "") the label of the given scans. Return how many."""
    scans = Scan.objects.filter(pk__in=_ids(scan_ids))
    detail = f"label: {label.strip()}" if label.strip() else "label cleared"
    audit_record(user=user, action=AuditEntry.Action.LABEL, scans=scans, detail=detail)
    return scans.write(label=label.strip())


def _ids(scan_ids: Iterable[int]) -> Iterable[int]:
    """The operand of a `pk__in`: a queryset (scans.selection) stays a subquery, anything else becomes a list."""
    return scan_ids if isinstance(scan_ids, QuerySet) else list(scan_ids)
