"""The refresh engine: claim due scans, ask Protecto for their statuses in batches, write back what changed.

A refresh claims due scans with a conditional update (a claim token, no lock held across HTTP), so any number of
workers can refresh at once without polling one scan twice. It writes only what changed, in a constant number of
queries per batch; SUCCESS and FAILED scans get no next check and are never polled again; a failed batch is
recorded on its scans and retried next cycle while the other batches go on.
"""

from __future__ import annotations

import logging
import time
import uuid
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from protecto import ProtectoAuthError, ProtectoClient, ProtectoError, ScanReport
from scans.models import RefreshRun, Scan, StatusChange

logger = logging.getLogger(__name__)

# A claimed scan whose refresh died is polled again after this long.
CLAIM_LEASE = timedelta(minutes=5)
# Stop claiming new batches after this long, so a cycle ends well inside the task's time limit.
CYCLE_DEADLINE_SECONDS = 200
# After this many failed batches in a row the API is taken to be down: the rest waits for the next cycle
# instead of spending minutes on retries that will fail the same way.
MAX_CONSECUTIVE_BATCH_FAILURES = 3
REFRESH_RUN_RETENTION = timedelta(days=7)


def protecto_client_from_settings() -> ProtectoClient:
    """A client configured from the PROTECTO_* settings."""
    return ProtectoClient(
        base_url=settings.PROTECTO_API_URL,
        token=settings.PROTECTO_AUTH_TOKEN,
        status_path=settings.PROTECTO_STATUS_PATH,
        timeout=settings.PROTECTO_TIMEOUT_SECONDS,
        batch_size=settings.PROTECTO_BATCH_SIZE,
        max_retries=settings.PROTECTO_MAX_RETRIES,
        backoff=settings.PROTECTO_BACKOFF_SECONDS,
        tz=zoneinfo.ZoneInfo(settings.PROTECTO_TIMEZONE),
    )


def _claim_batch(*, now: datetime, size: int) -> tuple[str, list[Scan]] | None:
    """Claim up to `size` due scans for this refresh alone; return the claim token and the scans.

    None means nothing is due. An empty list means a concurrent refresh claimed these candidates first: the
    caller looks again, since more may be due behind them.
    """
    due = Scan.objects.due(now)
    candidates = list(due.order_by("next_check_at", "pk").values_list("pk", flat=True)[:size])
    if not candidates:
        return None
    token = uuid.uuid4().hex
    # Conditional update: a concurrent refresh that claimed a row first has moved its next_check_at past now,
    # so the row no longer matches here and stays with that refresh. A claim shows nothing new: plain update().
    due.filter(pk__in=candidates).update(next_check_at=now + CLAIM_LEASE, claim_token=token)
    return token, list(Scan.objects.filter(claim_token=token).order_by("pk"))


def _merge_report(scan: Scan, report: ScanReport) -> bool:
    """Apply an answer to the scan in memory; True when any stored value changed.

    A value the answer leaves blank never replaces one we already know.
    """
    before = {name: getattr(scan, name) for name in Scan.ANSWER_FIELDS}
    if report.raw_status.strip():
        scan.status = report.status
        scan.raw_status = report.raw_status[:64]
    scan.submitted_at = report.submitted_at or scan.submitted_at
    scan.started_at = report.started_at or scan.started_at
    scan.ended_at = report.ended_at or scan.ended_at
    scan.error_message = report.error_message or scan.error_message
    scan.data_source = (report.data_source or scan.data_source)[:200]
    scan.object_path = (report.object_path or scan.object_path)[:500]
    scan.last_raw_answer = report.raw
    return any(getattr(scan, name) != value for name, value in before.items())


def _mark_checked(scan: Scan, *, now: datetime) -> None:
    """Bookkeeping of a scan whose answer arrived: released, and due again after one interval unless final."""
    scan.last_checked_at = now
    scan.last_check_error = ""
    scan.check_failures = 0
    scan.claim_token = ""
    scan.next_check_at = None if scan.is_final else now + _interval()


def _interval() -> timedelta:
    return timedelta(seconds=settings.REFRESH_INTERVAL_SECONDS)


@dataclass
class _BatchPlan:
    """What one answer means for each scan of its batch, worked out in memory before anything is written."""

    changed: list[Scan] = field(default_factory=list)
    transitions: list[StatusChange] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    unreported: list[int] = field(default_factory=list)
    answered: int = 0


def _plan_batch(*, scans: list[Scan], reports: list[ScanReport], now: datetime) -> _BatchPlan:
    """Merge each scan's report into it and sort the scans into changed, unchanged and not reported."""
    by_id = {report.tracking_id: report for report in reports}
    plan = _BatchPlan()
    for scan in scans:
        report = by_id.get(scan.tracking_id)
        if report is None:
            plan.unreported.append(scan.pk)
            continue
        plan.answered += 1
        old_status = scan.status
        if not _merge_report(scan, report):
            plan.unchanged.append(scan.pk)
            continue
        if scan.status != old_status:
            change = StatusChange(
                scan=scan,
                from_status=old_status,
                to_status=scan.status,
                raw_status=scan.raw_status,
                observed_at=now,
            )
            plan.transitions.append(change)
            scan.last_changed_at = now
        _mark_checked(scan, now=now)
        plan.changed.append(scan)
    return plan


# What a refresh writes back on a scan whose answer changed.
_WRITTEN_FIELDS = [
    *Scan.ANSWER_FIELDS,
    *("last_changed_at", "last_checked_at", "last_check_error", "check_failures", "claim_token", "next_check_at"),
]


def _write_batch(*, token: str, scans: list[Scan], reports: list[ScanReport], now: datetime) -> tuple[int, int]:
    """Write one batch's answers back in a constant number of queries; return (answered, changed)."""
    plan = _plan_batch(scans=scans, reports=reports, now=now)
    next_check = now + _interval()
    with transaction.atomic():
        # Only rows this refresh still holds are written: a refresh whose lease ran out must not write stale news.
        held = set(Scan.objects.select_for_update().filter(claim_token=token).values_list("pk", flat=True))
        changed = [scan for scan in plan.changed if scan.pk in held]
        Scan.objects.write_each(changed, _WRITTEN_FIELDS)
        StatusChange.objects.bulk_create([change for change in plan.transitions if change.scan.pk in held])
        mine = Scan.objects.filter(claim_token=token)
        mine.filter(pk__in=plan.unchanged).write(
            last_checked_at=now, last_check_error="", check_failures=0, claim_token="", next_check_at=next_check
        )
        mine.filter(pk__in=plan.unreported).write(
            last_check_error="Not reported in Protecto's last answer", claim_token="", next_check_at=next_check
        )
    return plan.answered, len(changed)


def _release_failed(*, token: str, error: ProtectoError, now: datetime) -> None:
    """Give back a batch whose request failed: statuses untouched, next try after one interval."""
    Scan.objects.filter(claim_token=token).write(
        claim_token="",
        last_check_error=str(error)[:1000],
        check_failures=F("check_failures") + 1,
        next_check_at=now + _interval(),
    )


@dataclass
class _Cycle:
    """The state of one refresh cycle while it runs."""

    run: RefreshRun
    client: ProtectoClient
    now: datetime
    calls_before: int
    errors: list[str] = field(default_factory=list)
    batches_ok: int = 0
    failures_in_a_row: int = 0
    token_refused: bool = False


def scans_refresh_due(
    *, now: datetime | None = None, client: ProtectoClient | None = None, ignore_schedule: bool = False
) -> RefreshRun:
    """Run one refresh cycle: poll every due, non-final scan in batches and record the cycle as a RefreshRun.

    `ignore_schedule` polls every non-final scan now, whatever its next_check_at.
    """
    now = now or timezone.now()
    own_client = client is None
    client = client or protecto_client_from_settings()
    run = RefreshRun.objects.create(started_at=now)
    if ignore_schedule:
        Scan.objects.active().filter(claim_token="").update(next_check_at=now)
    cycle = _Cycle(run=run, client=client, now=now, calls_before=client.requests_made)
    try:
        _poll_due_batches(cycle)
    finally:
        _finish(cycle)
        if own_client:
            client.close()
    return run


def _poll_due_batches(cycle: _Cycle) -> None:
    """Claim and poll batches until nothing is due, the deadline passes or the API is taken to be down."""
    deadline = time.monotonic() + CYCLE_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        claim = _claim_batch(now=cycle.now, size=cycle.client.batch_size)
        if claim is None:
            return
        token, scans = claim
        if scans and not _poll_batch(cycle, token, scans):
            return


def _poll_batch(cycle: _Cycle, token: str, scans: list[Scan]) -> bool:
    """Ask for one claimed batch and write the answer back; False when the cycle must stop."""
    cycle.run.ids_asked += len(scans)
    try:
        reports = cycle.client.fetch_status_batch([scan.tracking_id for scan in scans])
    except Exception as exc:
        return _batch_failed(cycle, token, scans, exc)
    cycle.batches_ok += 1
    cycle.failures_in_a_row = 0
    answered, changed = _write_batch(token=token, scans=scans, reports=reports, now=cycle.now)
    cycle.run.ids_answered += answered
    cycle.run.changed += changed
    return True


def _batch_failed(cycle: _Cycle, token: str, scans: list[Scan], exc: Exception) -> bool:
    """Record a failed batch on its scans and the run; False when the rest of the cycle would fail the same way."""
    if not isinstance(exc, ProtectoError):
        # A bug in answer handling must cost one batch, not the cycle or the worker.
        logger.exception("refresh batch of %d failed unexpectedly", len(scans))
        exc = ProtectoError(f"Unexpected error while reading Protecto's answer: {type(exc).__name__}")
    logger.warning("refresh batch of %d failed: %s", len(scans), exc)
    cycle.run.errors += 1
    cycle.errors.append(str(exc))
    _release_failed(token=token, error=exc, now=cycle.now)
    if isinstance(exc, ProtectoAuthError):
        cycle.token_refused = True
        return False  # every other batch would be refused the same way
    cycle.failures_in_a_row += 1
    if cycle.failures_in_a_row >= MAX_CONSECUTIVE_BATCH_FAILURES:
        cycle.errors.append(f"Stopped this cycle after {cycle.failures_in_a_row} failed batches in a row")
        return False
    return True


def _finish(cycle: _Cycle) -> None:
    """Record the cycle's outcome and forget runs older than the retention."""
    run = cycle.run
    run.api_calls = cycle.client.requests_made - cycle.calls_before
    run.finished_at = timezone.now()
    run.outcome = _outcome(run, batches_ok=cycle.batches_ok, token_refused=cycle.token_refused)
    run.error_text = "\n".join(dict.fromkeys(cycle.errors))[:4000]
    run.save()
    # A run an alert names as its outage's first is kept: it is that alert's identity (Alert.outage).
    RefreshRun.objects.filter(
        started_at__lt=cycle.now - REFRESH_RUN_RETENTION, outage_alerts__isnull=True
    ).delete()


def _outcome(run: RefreshRun, *, batches_ok: int, token_refused: bool) -> str:
    if token_refused:
        return RefreshRun.Outcome.AUTH_REFUSED
    if run.errors == 0:
        return RefreshRun.Outcome.OK if batches_ok else RefreshRun.Outcome.IDLE
    return RefreshRun.Outcome.PARTIAL if batches_ok else RefreshRun.Outcome.FAILED
