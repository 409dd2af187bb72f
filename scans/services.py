"""Writes: registering tracking IDs and refreshing their statuses from Protecto."""

from __future__ import annotations

import logging
import re
import time
import uuid
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from protecto.client import ProtectoAuthError, ProtectoClient, ProtectoError, ScanReport
from scans.models import TRACKING_ID_MAX_LENGTH, RefreshRun, Scan, StatusChange

logger = logging.getLogger(__name__)

_ALLOWED = re.compile(r"[A-Za-z0-9_-]")
# A claimed scan whose refresh died is polled again after this long.
CLAIM_LEASE = timedelta(minutes=5)
# Stop claiming new batches after this long, so a cycle ends well inside the task's time limit.
CYCLE_DEADLINE_SECONDS = 200
# After this many failed batches in a row the API is taken to be down: the rest waits for the next cycle
# instead of spending minutes on retries that will fail the same way.
MAX_CONSECUTIVE_BATCH_FAILURES = 3
REFRESH_RUN_RETENTION = timedelta(days=7)
# The fields a refresh may write back on a scan whose answer changed.
_ANSWER_FIELDS = (
    "status",
    "raw_status",
    "submitted_at",
    "started_at",
    "ended_at",
    "error_message",
    "data_source",
    "object_path",
    "last_raw_answer",
)


def tracking_id_problem(value: str) -> str | None:
    """Say why a tracking ID is not acceptable, or None when it is."""
    if not value:
        return "is empty"
    if len(value) > TRACKING_ID_MAX_LENGTH:
        return f"is {len(value)} characters long; the limit is {TRACKING_ID_MAX_LENGTH}"
    bad = sorted({char for char in value if not _ALLOWED.fullmatch(char)})
    if bad:
        shown = ", ".join(repr(char) for char in bad[:5])
        return f"contains {shown}; only letters, digits, '-' and '_' are allowed"
    return None


@dataclass
class TrackResult:
    """What became of each ID given to scans_track."""

    added: list[str] = field(default_factory=list)
    already_tracked: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


def scans_track(*, ids: Iterable[str], label: str = "", now: datetime | None = None) -> TrackResult:
    """Start tracking the valid IDs; report duplicates and rejects without failing the others."""
    now = now or timezone.now()
    result = TrackResult()
    wanted: dict[str, None] = {}
    for raw in ids:
        tracking_id = raw.strip()
        problem = tracking_id_problem(tracking_id)
        if problem:
            result.rejected.append((raw, problem))
        elif tracking_id in wanted:
            result.already_tracked.append(tracking_id)
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
                created_at=now,
                next_check_at=now,
                updated_at=now,
            )
            for tracking_id in new
        ],
        ignore_conflicts=True,
        batch_size=500,
    )
    result.added.extend(new)
    return result


def scans_track_entries(*, entries: Iterable[tuple[str, str]], label: str = "") -> TrackResult:
    """Track (tracking ID, label) pairs, e.g. from a CSV; an entry without a label takes `label`."""
    by_label: dict[str, list[str]] = {}
    for tracking_id, entry_label in entries:
        by_label.setdefault(entry_label.strip() or label, []).append(tracking_id)
    merged = TrackResult()
    for group_label, ids in by_label.items():
        result = scans_track(ids=ids, label=group_label)
        merged.added += result.added
        merged.already_tracked += result.already_tracked
        merged.rejected += result.rejected
    return merged


def protecto_client_from_settings() -> ProtectoClient:
    """A client configured from the PROTECTO_* settings."""
    return ProtectoClient(
        base_url=settings.PROTECTO_API_URL,
        token=settings.PROTECTO_AUTH_TOKEN,
        status_path=settings.PROTECTO_STATUS_PATH,
        submit_path=settings.PROTECTO_SUBMIT_PATH,
        timeout=settings.PROTECTO_TIMEOUT_SECONDS,
        batch_size=settings.PROTECTO_BATCH_SIZE,
        max_retries=settings.PROTECTO_MAX_RETRIES,
        backoff=settings.PROTECTO_BACKOFF_SECONDS,
        tz=zoneinfo.ZoneInfo(settings.PROTECTO_TIMEZONE),
    )


def _due_scans(now: datetime):
    # A scan checked one interval ago is due at this tick even if the tick fires a moment early; without the
    # grace, beat's jitter would skip it to the tick after and double its check interval.
    grace = timedelta(seconds=min(5.0, settings.REFRESH_INTERVAL_SECONDS / 5))
    due = Scan.objects.filter(next_check_at__lte=now + grace, archived_at__isnull=True, status__in=Scan.ACTIVE)
    return due.order_by("next_check_at", "pk")


def _claim_batch(*, now: datetime, size: int) -> tuple[str, list[Scan]] | None:
    """Claim up to `size` due scans for this refresh alone; return the claim token and the scans.

    None means nothing is due. An empty list means a concurrent refresh claimed these candidates first: the
    caller looks again, since more may be due behind them.
    """
    candidates = list(_due_scans(now).values_list("pk", flat=True)[:size])
    if not candidates:
        return None
    token = uuid.uuid4().hex
    # Conditional update: a concurrent refresh that claimed a row first has moved its next_check_at past now,
    # so the row no longer matches here and stays with that refresh.
    _due_scans(now).filter(pk__in=candidates).update(next_check_at=now + CLAIM_LEASE, claim_token=token)
    return token, list(Scan.objects.filter(claim_token=token).order_by("pk"))


def _merge_report(scan: Scan, report: ScanReport) -> bool:
    """Apply an answer to the scan in memory; True when any stored value changed.

    A value the answer leaves blank never replaces one we already know.
    """
    before = {name: getattr(scan, name) for name in _ANSWER_FIELDS}
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


@dataclass
class _BatchOutcome:
    answered: int = 0
    changed: int = 0


def _write_batch(*, token: str, scans: list[Scan], reports: list[ScanReport], now: datetime) -> _BatchOutcome:
    """Write one batch's answers back in a constant number of queries."""
    interval = timedelta(seconds=settings.REFRESH_INTERVAL_SECONDS)
    # updated_at is the wall-clock time of this write, not the cycle's start: an open page compares the newest
    # updated_at with what it last saw, and a later batch must never look older than an earlier one.
    stamp = timezone.now()
    by_id = {report.tracking_id: report for report in reports}
    outcome = _BatchOutcome()
    changed: list[Scan] = []
    transitions: list[StatusChange] = []
    unchanged: list[int] = []
    unreported: list[int] = []
    for scan in scans:
        report = by_id.get(scan.tracking_id)
        if report is None:
            unreported.append(scan.pk)
            continue
        outcome.answered += 1
        old_status = scan.status
        if not _merge_report(scan, report):
            unchanged.append(scan.pk)
            continue
        if scan.status != old_status:
            transitions.append(
                StatusChange(
                    scan=scan,
                    from_status=old_status,
                    to_status=scan.status,
                    raw_status=scan.raw_status,
                    observed_at=now,
                )
            )
            scan.last_changed_at = now
        scan.last_checked_at = now
        scan.updated_at = stamp
        scan.last_check_error = ""
        scan.check_failures = 0
        scan.claim_token = ""
        scan.next_check_at = None if scan.is_final else now + interval
        changed.append(scan)

    with transaction.atomic():
        # Only rows this refresh still holds are written: a refresh whose lease ran out must not write stale news.
        held = set(Scan.objects.select_for_update().filter(claim_token=token).values_list("pk", flat=True))
        changed = [scan for scan in changed if scan.pk in held]
        Scan.objects.bulk_update(
            changed,
            [
                *_ANSWER_FIELDS,
                "last_changed_at",
                "last_checked_at",
                "last_check_error",
                "check_failures",
                "claim_token",
                "next_check_at",
                "updated_at",
            ],
            batch_size=1000,
        )
        StatusChange.objects.bulk_create([change for change in transitions if change.scan.pk in held])
        Scan.objects.filter(pk__in=unchanged, claim_token=token).update(
            last_checked_at=now,
            last_check_error="",
            check_failures=0,
            claim_token="",
            next_check_at=now + interval,
            updated_at=stamp,
        )
        Scan.objects.filter(pk__in=unreported, claim_token=token).update(
            last_check_error="Not reported in Protecto's last answer",
            claim_token="",
            next_check_at=now + interval,
            updated_at=stamp,
        )
    outcome.changed = len(changed)
    return outcome


def _release_failed(*, token: str, error: ProtectoError, now: datetime) -> None:
    """Give back a batch whose request failed: statuses untouched, next try after one interval."""
    stamp = timezone.now()
    Scan.objects.filter(claim_token=token).update(
        claim_token="",
        last_check_error=str(error)[:1000],
        check_failures=F("check_failures") + 1,
        next_check_at=now + timedelta(seconds=settings.REFRESH_INTERVAL_SECONDS),
        updated_at=stamp,
    )


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
        Scan.objects.filter(archived_at__isnull=True, status__in=Scan.ACTIVE, claim_token="").update(
            next_check_at=now
        )
    calls_before = client.requests_made
    errors: list[str] = []
    batches_ok = 0
    failures_in_a_row = 0
    token_refused = False
    deadline = time.monotonic() + CYCLE_DEADLINE_SECONDS
    try:
        while time.monotonic() < deadline:
            claim = _claim_batch(now=now, size=client.batch_size)
            if claim is None:
                break
            token, scans = claim
            if not scans:
                continue
            run.ids_asked += len(scans)
            try:
                reports = client.fetch_status_batch([scan.tracking_id for scan in scans])
            except Exception as exc:
                if not isinstance(exc, ProtectoError):
                    # A bug in answer handling must cost one batch, not the cycle or the worker.
                    logger.exception("refresh batch of %d failed unexpectedly", len(scans))
                    exc = ProtectoError(f"Unexpected error while reading Protecto's answer: {type(exc).__name__}")
                logger.warning("refresh batch of %d failed: %s", len(scans), exc)
                run.errors += 1
                errors.append(str(exc))
                _release_failed(token=token, error=exc, now=now)
                if isinstance(exc, ProtectoAuthError):
                    token_refused = True
                    break  # every other batch would be refused the same way
                failures_in_a_row += 1
                if failures_in_a_row >= MAX_CONSECUTIVE_BATCH_FAILURES:
                    errors.append(f"Stopped this cycle after {failures_in_a_row} failed batches in a row")
                    break
                continue
            batches_ok += 1
            failures_in_a_row = 0
            outcome = _write_batch(token=token, scans=scans, reports=reports, now=now)
            run.ids_answered += outcome.answered
            run.changed += outcome.changed
    finally:
        run.api_calls = client.requests_made - calls_before
        run.finished_at = timezone.now()
        run.outcome = _outcome(run, batches_ok=batches_ok, token_refused=token_refused)
        run.error_text = "\n".join(dict.fromkeys(errors))[:4000]
        run.save()
        RefreshRun.objects.filter(started_at__lt=now - REFRESH_RUN_RETENTION).delete()
        if own_client:
            client.close()
    return run


def _outcome(run: RefreshRun, *, batches_ok: int, token_refused: bool) -> str:
    if token_refused:
        return RefreshRun.Outcome.AUTH_REFUSED
    if run.errors == 0:
        return RefreshRun.Outcome.OK if batches_ok else RefreshRun.Outcome.IDLE
    return RefreshRun.Outcome.PARTIAL if batches_ok else RefreshRun.Outcome.FAILED


def _active(scan_ids: Iterable[int]):
    return Scan.objects.filter(pk__in=list(scan_ids), archived_at__isnull=True, status__in=Scan.ACTIVE)


def scans_refresh_now(*, scan_ids: Iterable[int], now: datetime | None = None) -> int:
    """Make the given non-final, non-archived scans due now and ask a worker to poll them; return how many.

    The poll itself runs in the worker (the same refresh the beat runs), so a slow API never holds a page.
    """
    now = now or timezone.now()
    count = _active(scan_ids).filter(claim_token="").update(next_check_at=now, updated_at=now)
    if count:
        scans_request_refresh()
    return count


def scans_request_refresh() -> None:
    """Ask a worker to run a refresh as soon as the current transaction commits.

    If the broker cannot take the message the scans are still due, so the next beat polls them: log, never fail
    the request.
    """
    transaction.on_commit(_send_refresh_task)


def request_alert_send() -> None:
    """Ask a worker to send due alerts once the current transaction commits (never fails the request)."""
    transaction.on_commit(lambda: _send_task("send_alerts"))


def _send_refresh_task() -> None:
    _send_task("refresh_due_scans")


def _send_task(name: str) -> None:
    from scans import tasks

    try:
        getattr(tasks, name).apply_async(retry=False)
    except Exception:
        logger.warning("could not queue %s; the next scheduled run will do it", name, exc_info=True)


def scans_archive(*, scan_ids: Iterable[int], now: datetime | None = None) -> int:
    """Stop tracking: archived scans leave the default list and are never polled. Return how many changed."""
    now = now or timezone.now()
    return Scan.objects.filter(pk__in=list(scan_ids), archived_at__isnull=True).update(
        archived_at=now, next_check_at=None, claim_token="", updated_at=now
    )


def scans_restore(*, scan_ids: Iterable[int], now: datetime | None = None) -> int:
    """Track archived scans again; the non-final ones are polled at the next refresh. Return how many."""
    now = now or timezone.now()
    archived = Scan.objects.filter(pk__in=list(scan_ids), archived_at__isnull=False)
    restored = archived.filter(status__in=Scan.TERMINAL).update(archived_at=None, updated_at=now)
    restored += archived.filter(status__in=Scan.ACTIVE).update(archived_at=None, next_check_at=now, updated_at=now)
    return restored


def scans_set_label(*, scan_ids: Iterable[int], label: str, now: datetime | None = None) -> int:
    """Set (or clear, with "") the label of the given scans. Return how many."""
    now = now or timezone.now()
    return Scan.objects.filter(pk__in=list(scan_ids)).update(label=label.strip()[:200], updated_at=now)
