"""The refresh engine: claim due scans, ask Protecto for their statuses in batches, write back what changed.

A refresh claims due scans with a conditional update (a claim token and a lease counted from the claim, no lock
held across HTTP), so any number of workers can refresh at once without polling one scan twice. Answers are
judged before they are stored (scans/judgement.py): sanitised, redacted, capped, kept moving forward. It writes
only what changed, in a constant number of queries per batch; a batch whose write the database refuses is
written again scan by scan, so one bad row costs one scan. SUCCESS and FAILED scans get no next check and are
never polled again; an ID Protecto stops reporting becomes NOT FOUND and is polled with backoff. The cycle's
outcome says how much it could see: failed batches, answers that cover too few of the IDs asked, unwritable
scans; a run whose worker died is closed as abandoned by the next cycle.
"""

from __future__ import annotations

import logging
import time
import uuid
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from protecto import ProtectoAuthError, ProtectoClient, ProtectoError, ScanReport
from protecto.errors import one_line
from scans.heartbeat import heartbeat_ping
from scans.judgement import group_by_id, judge_answer, redact, warning_line
from scans.models import RefreshRun, Scan, StatusChange

logger = logging.getLogger(__name__)

# Time to write a batch back after its answer arrived, added to the request's worst case to make the lease.
LEASE_MARGIN = timedelta(seconds=20)
# Stop claiming new batches after this long, so a cycle ends well inside the task's time limit.
CYCLE_DEADLINE_SECONDS = 200
# A batch is claimed only if even its slowest possible request ends within this (the task's soft limit is 270 s).
CYCLE_BUDGET_SECONDS = 250
# After this many failed batches in a row the API is taken to be down: the rest waits for the next cycle
# instead of spending minutes on retries that will fail the same way.
MAX_CONSECUTIVE_BATCH_FAILURES = 3
REFRESH_RUN_RETENTION = timedelta(days=7)
# A NOT FOUND scan is checked after 1, 2, 4... intervals, at most this far apart.
NOT_FOUND_MAX_BACKOFF = timedelta(hours=1)


def protecto_client_from_settings() -> ProtectoClient:
    """A client configured from the PROTECTO_* settings."""
    return ProtectoClient(
        base_url=settings.PROTECTO_API_URL,
        token=settings.PROTECTO_AUTH_TOKEN,
        status_path=settings.PROTECTO_STATUS_PATH,
        timeout=settings.PROTECTO_TIMEOUT_SECONDS,
        deadline=settings.PROTECTO_DEADLINE_SECONDS,
        max_answer_bytes=settings.PROTECTO_MAX_ANSWER_BYTES,
        batch_size=settings.PROTECTO_BATCH_SIZE,
        max_retries=settings.PROTECTO_MAX_RETRIES,
        backoff=settings.PROTECTO_BACKOFF_SECONDS,
        tz=zoneinfo.ZoneInfo(settings.PROTECTO_TIMEZONE),
    )


def claim_lease(client: ProtectoClient) -> timedelta:
    """How long a claimed batch stays with its refresh: the longest one status request can take, plus a margin.

    A worker that dies mid-batch freezes its scans this long, so it is as short as the request bound allows.
    """
    return timedelta(seconds=client.worst_case_seconds()) + LEASE_MARGIN


def _claim_batch(*, now: datetime, size: int, lease: timedelta) -> tuple[str, list[Scan]] | None:
    """Claim up to `size` due scans for this refresh alone; return the claim token and the scans.

    None means nothing is due. An empty list means a concurrent refresh claimed these candidates first: the
    caller looks again, since more may be due behind them.
    """
    due = Scan.objects.due(now)
    candidates = list(due.order_by("next_check_at", "pk").values_list("pk", flat=True)[:size])
    if not candidates:
        return None
    token = uuid.uuid4().hex
    # The lease runs from the claim, not the cycle's start: a late batch of a long cycle gets its full lease.
    # (A cycle run for a time ahead of the clock, as a backfill or a test may, leases from its own time.)
    held_until = max(timezone.now(), now) + lease
    # Conditional update: a concurrent refresh that claimed a row first has moved its next_check_at past now,
    # so the row no longer matches here and stays with that refresh. A claim shows nothing new: plain update().
    due.filter(pk__in=candidates).update(next_check_at=held_until, claim_token=token)
    return token, list(Scan.objects.filter(claim_token=token).order_by("pk"))


def _interval() -> timedelta:
    return timedelta(seconds=settings.REFRESH_INTERVAL_SECONDS)


def _not_found_backoff(failures: int) -> timedelta:
    """The wait before the next check of a NOT FOUND scan after `failures` unreported checks in a row."""
    cap = max(NOT_FOUND_MAX_BACKOFF, _interval())
    return min(_interval() * 2 ** min(failures, 20), cap)


@dataclass
class _BatchPlan:
    """What one answer means for each scan of its batch, worked out in memory before anything is written."""

    changed: list[Scan] = field(default_factory=list)  # written row by row (write_each)
    transitions: list[StatusChange] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    unreported: list[int] = field(default_factory=list)
    answered: int = 0
    # Not reported, and not NOT FOUND before: the IDs an answer should have covered and did not.
    missing: int = 0
    answers_changed: int = 0


def _plan_batch(*, scans: list[Scan], reports: list[ScanReport], now: datetime) -> _BatchPlan:
    """Judge each scan's answer and sort the scans into changed, unchanged and not reported."""
    by_id = group_by_id(reports)
    plan = _BatchPlan()
    for scan in scans:
        items = by_id.get(scan.tracking_id)
        if items:
            plan.answered += 1
            _plan_reported(plan, scan, items, now=now)
        else:
            _plan_unreported(plan, scan, now=now)
    return plan


def _plan_reported(plan: _BatchPlan, scan: Scan, items: list[ScanReport], *, now: datetime) -> None:
    """Apply the judged answer to the scan in memory and file it under changed or unchanged."""
    old_status = scan.status
    verdict = judge_answer(scan, items, token=settings.PROTECTO_AUTH_TOKEN, now=now)
    before = {name: getattr(scan, name) for name in verdict.values}
    for name, value in verdict.values.items():
        setattr(scan, name, value)
    answer_changed = any(getattr(scan, name) != value for name, value in before.items())
    if not answer_changed and not verdict.warnings:
        plan.unchanged.append(scan.pk)
        return
    if verdict.warnings:
        scan.answer_warning = warning_line(verdict.warnings, now=now, token=settings.PROTECTO_AUTH_TOKEN)
        logger.warning("answer for %s not applied as sent: %s", scan.tracking_id, scan.answer_warning)
    plan.answers_changed += answer_changed
    _note_transition(plan, scan, old_status, now=now)
    scan.last_checked_at = now
    scan.last_reported_at = now
    scan.last_check_error = ""
    scan.check_failures = 0
    scan.claim_token = ""
    scan.next_check_at = None if scan.is_final else now + _interval()
    plan.changed.append(scan)


def _plan_unreported(plan: _BatchPlan, scan: Scan, *, now: datetime) -> None:
    """An ID the answer left out: due again next interval, or NOT FOUND once unreported for long enough."""
    since = scan.last_reported_at or scan.created_at
    if scan.status == Scan.Status.NOT_FOUND:
        scan.check_failures += 1
        scan.next_check_at = now + _not_found_backoff(scan.check_failures)
    elif now - since >= timedelta(hours=settings.NOT_FOUND_AFTER_HOURS):
        plan.missing += 1
        old_status, scan.status = scan.status, Scan.Status.NOT_FOUND
        _note_transition(plan, scan, old_status, now=now)
        scan.check_failures = 0
        scan.next_check_at = now + _not_found_backoff(0)
    else:
        plan.missing += 1
        plan.unreported.append(scan.pk)
        return
    shown = "it was tracked" if scan.last_reported_at is None else f"{since.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    scan.last_check_error = (
        f"Protecto has not reported this ID since {shown} (NOT FOUND after {settings.NOT_FOUND_AFTER_HOURS:g} h);"
        " checked with backoff in case it appears"
    )
    scan.claim_token = ""
    plan.changed.append(scan)


def _note_transition(plan: _BatchPlan, scan: Scan, old_status: str, *, now: datetime) -> None:
    if scan.status != old_status:
        plan.transitions.append(
            StatusChange(
                scan=scan,
                from_status=old_status,
                to_status=scan.status,
                raw_status=scan.raw_status,
                observed_at=now,
            )
        )
        scan.last_changed_at = now


# What a refresh writes back on a scan with per-row news.
_WRITTEN_FIELDS = [
    *Scan.ANSWER_FIELDS,
    *("last_changed_at", "last_checked_at", "last_check_error", "check_failures", "claim_token", "next_check_at"),
    *("last_reported_at", "answer_warning"),
]


@dataclass
class _BatchWrite:
    """What writing one batch achieved."""

    plan: _BatchPlan
    written: int = 0
    failures: list[str] = field(default_factory=list)


def _write_batch(*, token: str, scans: list[Scan], reports: list[ScanReport], now: datetime) -> _BatchWrite:
    """Write one batch's answers back in a constant number of queries; scan by scan if the database refuses."""
    plan = _plan_batch(scans=scans, reports=reports, now=now)
    try:
        with transaction.atomic():
            written = _write_rows(token=token, scans=plan.changed, transitions=plan.transitions)
            written += _write_constant(token=token, plan=plan, now=now)
        return _BatchWrite(plan=plan, written=written)
    except DatabaseError as exc:
        logger.warning("writing a batch of %d failed (%s); writing scan by scan", len(scans), type(exc).__name__)
    return _write_scan_by_scan(token=token, plan=plan, now=now)


def _write_rows(*, token: str, scans: list[Scan], transitions: list[StatusChange]) -> int:
    """Write the per-row news of the scans this refresh still holds; return how many it held."""
    # Only rows this refresh still holds are written: a refresh whose lease ran out must not write stale news.
    pks = [scan.pk for scan in scans]
    held = set(Scan.objects.select_for_update().filter(claim_token=token, pk__in=pks).values_list("pk", flat=True))
    Scan.objects.write_each([scan for scan in scans if scan.pk in held], _WRITTEN_FIELDS)
    StatusChange.objects.bulk_create([change for change in transitions if change.scan.pk in held])
    return len(held)


def _write_constant(*, token: str, plan: _BatchPlan, now: datetime) -> int:
    """Write the scans whose news is the same for all: answered without change, and not reported (yet)."""
    mine = Scan.objects.filter(claim_token=token)
    next_check = now + _interval()
    written = mine.filter(pk__in=plan.unchanged).write(
        last_checked_at=now,
        last_reported_at=now,
        last_check_error="",
        check_failures=0,
        claim_token="",
        next_check_at=next_check,
    )
    return written + mine.filter(pk__in=plan.unreported).write(
        last_check_error="Not reported in Protecto's last answer", claim_token="", next_check_at=next_check
    )


def _write_scan_by_scan(*, token: str, plan: _BatchPlan, now: datetime) -> _BatchWrite:
    """Write each scan in its own savepoint, so a row the database refuses costs that scan alone."""
    result = _BatchWrite(plan=plan)
    for scan in plan.changed:
        transitions = [change for change in plan.transitions if change.scan is scan]
        try:
            with transaction.atomic():
                result.written += _write_rows(token=token, scans=[scan], transitions=transitions)
        except DatabaseError as exc:
            result.failures.append(_record_write_failure(token=token, scan=scan, error=exc, now=now))
    try:
        with transaction.atomic():
            result.written += _write_constant(token=token, plan=plan, now=now)
    except DatabaseError as exc:
        count = len(plan.unchanged) + len(plan.unreported)
        result.failures.extend([f"could not save: {type(exc).__name__}"] * count)
    return result


def _record_write_failure(*, token: str, scan: Scan, error: DatabaseError, now: datetime) -> str:
    """Release a scan whose answer could not be written, saying why; return the reason."""
    reason = redact(
        f"Could not save Protecto's answer: {type(error).__name__}: {error}", settings.PROTECTO_AUTH_TOKEN
    )
    reason = one_line(reason, limit=500)
    logger.warning("scan %s: %s", scan.tracking_id, reason)
    try:
        with transaction.atomic():
            Scan.objects.filter(pk=scan.pk, claim_token=token).write(
                claim_token="",
                last_check_error=reason,
                check_failures=F("check_failures") + 1,
                next_check_at=now + _interval(),
            )
    except DatabaseError:
        logger.exception("could not record the write failure of scan %s", scan.tracking_id)
    return reason


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
    lease: timedelta
    errors: list[str] = field(default_factory=list)
    batches_ok: int = 0
    failures_in_a_row: int = 0
    token_refused: bool = False
    # Coverage of the answers that arrived: IDs they should have reported, and those they did.
    expected: int = 0
    reported: int = 0


def scans_refresh_due(
    *, now: datetime | None = None, client: ProtectoClient | None = None, ignore_schedule: bool = False
) -> RefreshRun:
    """Run one refresh cycle: poll every due, non-final scan in batches and record the cycle as a RefreshRun.

    `ignore_schedule` polls every non-final scan now, whatever its next_check_at.
    """
    now = now or timezone.now()
    own_client = client is None
    client = client or protecto_client_from_settings()
    lease = claim_lease(client)
    close_abandoned_runs(now=now, lease=lease)
    run = RefreshRun.objects.create(started_at=now)
    if ignore_schedule:
        Scan.objects.active().filter(claim_token="").update(next_check_at=now)
    cycle = _Cycle(run=run, client=client, now=now, calls_before=client.requests_made, lease=lease)
    try:
        _poll_due_batches(cycle)
    finally:
        _finish(cycle)
        if own_client:
            client.close()
    return run


def close_abandoned_runs(*, now: datetime, lease: timedelta) -> int:
    """Close as abandoned the runs still `running` with no progress for longer than one lease.

    A live cycle records progress after every batch, and no batch outlives its lease (the client's worst case and a
    margin), so a run silent for longer has lost its worker.
    """
    cutoff = now - lease
    return (
        RefreshRun.objects.running()
        .without_progress_since(cutoff)
        .update(
            outcome=RefreshRun.Outcome.ABANDONED,
            finished_at=now,
            error_text="Closed by a later cycle: no progress since the worker stopped (killed or lost)",
        )
    )


def _poll_due_batches(cycle: _Cycle) -> None:
    """Claim and poll batches until nothing is due, the deadline passes or the API is taken to be down."""
    started = time.monotonic()
    deadline, budget_end = started + CYCLE_DEADLINE_SECONDS, started + CYCLE_BUDGET_SECONDS
    slowest_batch = cycle.client.worst_case_seconds()
    while time.monotonic() < deadline and time.monotonic() + slowest_batch < budget_end:
        claim = _claim_batch(now=cycle.now, size=cycle.client.batch_size, lease=cycle.lease)
        if claim is None:
            return
        token, scans = claim
        if not scans:
            continue
        go_on = _poll_batch(cycle, token, scans)
        _record_progress(cycle.run)
        if not go_on:
            return


def _record_progress(run: RefreshRun) -> None:
    """Show the run alive and its counts so far (one UPDATE), so a live long cycle is never taken for dead."""
    run.last_progress_at = timezone.now()
    RefreshRun.objects.filter(pk=run.pk).update(
        last_progress_at=run.last_progress_at,
        ids_asked=run.ids_asked,
        ids_answered=run.ids_answered,
        changed=run.changed,
        errors=run.errors,
        write_failures=run.write_failures,
    )


def _poll_batch(cycle: _Cycle, token: str, scans: list[Scan]) -> bool:
    """Ask for one claimed batch and write the answer back; False when the cycle must stop."""
    cycle.run.ids_asked += len(scans)
    try:
        reports = cycle.client.fetch_status_batch([scan.tracking_id for scan in scans])
    except Exception as exc:
        return _batch_failed(cycle, token, scans, exc)
    cycle.failures_in_a_row = 0
    result = _write_batch(token=token, scans=scans, reports=reports, now=cycle.now)
    plan = result.plan
    cycle.run.ids_answered += plan.answered
    cycle.run.changed += plan.answers_changed
    cycle.expected += plan.answered + plan.missing
    cycle.reported += plan.answered
    if result.failures:
        cycle.run.write_failures += len(result.failures)
        cycle.errors.append(f"{len(result.failures)} scan(s) could not be saved: {result.failures[0]}")
    if result.failures and not result.written:
        cycle.run.errors += 1  # a batch that could not be written at all is a failed batch
    else:
        cycle.batches_ok += 1
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
    run.outcome = _outcome(cycle)
    if cycle.expected and cycle.reported * 100 < settings.REFRESH_MIN_COVERAGE_PERCENT * cycle.expected:
        cycle.errors.append(f"Protecto's answers reported {cycle.reported} of {cycle.expected} IDs asked")
    run.error_text = "\n".join(dict.fromkeys(cycle.errors))[:4000]
    run.save()
    # Recorded first: an outside dead-man's switch hears from us only after a cycle that really succeeded.
    heartbeat_ping(run=run)
    # A run an alert names as its outage's first is kept: it is that alert's identity (Alert.outage).
    RefreshRun.objects.filter(
        started_at__lt=cycle.now - REFRESH_RUN_RETENTION, outage_alerts__isnull=True
    ).delete()


def _outcome(cycle: _Cycle) -> str:
    """The cycle's outcome: never OK while it was partly blind (failed batches, thin answers, unsaved scans)."""
    run = cycle.run
    if cycle.token_refused:
        return RefreshRun.Outcome.AUTH_REFUSED
    if not cycle.batches_ok:
        return RefreshRun.Outcome.FAILED if run.errors else RefreshRun.Outcome.IDLE
    if cycle.expected and not cycle.reported:
        return RefreshRun.Outcome.FAILED  # answers arrived, but none reported anything asked
    if cycle.reported * 100 < settings.REFRESH_MIN_COVERAGE_PERCENT * cycle.expected:
        return RefreshRun.Outcome.DEGRADED
    if run.errors or run.write_failures:
        return RefreshRun.Outcome.PARTIAL
    return RefreshRun.Outcome.OK
