"""Writing one batch's answer back: judge each scan's answer, then write only what changed.

A scan whose visible data changed gets the full write (its answer fields, updated_at, its poll row) and a
StatusChange if its status moved. A scan answered without change gets one set-based UPDATE for the whole batch
of its narrow poll row alone (last checked, last reported, next check, claim: scans.models.ScanPoll): the wide
scan row, its indexes and updated_at stay as they are. updated_at tells open pages that something changed, and a
poll that changed nothing must not say so.
A batch whose write the database refuses is written again scan by scan, so one bad row costs one scan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F

from protecto import ProtectoError, ScanReport
from protecto.errors import one_line
from scans.judgement import group_by_id, judge_answer, redact, warning_line
from scans.models import Scan, ScanPoll, StatusChange
from scans.models.bulk import update_each
from scans.schedule import next_check_delay

logger = logging.getLogger(__name__)

# A NOT FOUND scan is checked after 1, 2, 4... intervals, at most this far apart.
NOT_FOUND_MAX_BACKOFF = timedelta(hours=1)


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
    # Answered without change: written by one narrow UPDATE that leaves updated_at alone.
    unchanged: list[int] = field(default_factory=list)
    # Their next check, by adaptive polling (scans.schedule): the longer unchanged, the later. Few distinct values
    # (the interval doubled a few times, up to the cap), so one UPDATE per value.
    unchanged_delays: dict[int, timedelta] = field(default_factory=dict)
    # Answered without change, but an error or failure count was showing: clearing it is a visible change.
    recovered: list[int] = field(default_factory=list)
    unreported: list[int] = field(default_factory=list)
    # Next checks count from here: the cycle's tick (see scans.refresh.scans_refresh_batch).
    schedule_from: datetime | None = None
    answered: int = 0
    # Not reported, and not NOT FOUND before: the IDs an answer should have covered and did not.
    missing: int = 0
    answers_changed: int = 0


def _plan_batch(
    *, scans: list[Scan], reports: list[ScanReport], now: datetime, schedule_from: datetime
) -> _BatchPlan:
    """Judge each scan's answer and sort the scans into changed, unchanged and not reported."""
    by_id = group_by_id(reports)
    plan = _BatchPlan(schedule_from=schedule_from)
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
        (plan.recovered if scan.check_failures or scan.last_check_error else plan.unchanged).append(scan.pk)
        plan.unchanged_delays[scan.pk] = next_check_delay(
            last_change=scan.last_changed_at or scan.created_at, now=now
        )
        return
    if verdict.warnings:
        scan.answer_warning = warning_line(verdict.warnings, now=now, token=settings.PROTECTO_AUTH_TOKEN)
        logger.warning("answer for %s not applied as sent: %s", scan.tracking_id, scan.answer_warning)
    plan.answers_changed += answer_changed
    _note_transition(plan, scan, old_status, now=now)
    scan.last_check_error = ""
    scan.check_failures = 0
    poll = scan.poll
    poll.last_checked_at = now
    poll.last_reported_at = now
    poll.claim_token = ""
    poll.next_check_at = None if scan.is_final else plan.schedule_from + _interval()
    plan.changed.append(scan)


def _plan_unreported(plan: _BatchPlan, scan: Scan, *, now: datetime) -> None:
    """An ID the answer left out: due again next interval, or NOT FOUND once unreported for long enough."""
    poll = scan.poll
    since = poll.last_reported_at or scan.created_at
    if scan.status == Scan.Status.NOT_FOUND:
        scan.check_failures += 1
        poll.next_check_at = plan.schedule_from + _not_found_backoff(scan.check_failures)
    elif now - since >= timedelta(hours=settings.NOT_FOUND_AFTER_HOURS):
        plan.missing += 1
        old_status, scan.status = scan.status, Scan.Status.NOT_FOUND
        _note_transition(plan, scan, old_status, now=now)
        scan.check_failures = 0
        poll.next_check_at = plan.schedule_from + _not_found_backoff(0)
    else:
        plan.missing += 1
        plan.unreported.append(scan.pk)
        return
    shown = "it was tracked" if poll.last_reported_at is None else f"{since.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    scan.last_check_error = (
        f"Protecto has not reported this ID since {shown} (NOT FOUND after {settings.NOT_FOUND_AFTER_HOURS:g} h);"
        " checked with backoff in case it appears"
    )
    poll.claim_token = ""
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


# What a refresh writes back on a scan with per-row news, and on its poll row.
_WRITTEN_FIELDS = [*Scan.ANSWER_FIELDS, "last_changed_at", "last_check_error", "check_failures", "answer_warning"]
_POLL_FIELDS = ["last_checked_at", "last_reported_at", "claim_token", "next_check_at"]


@dataclass
class _BatchWrite:
    """What writing one batch achieved."""

    plan: _BatchPlan
    written: int = 0
    failures: list[str] = field(default_factory=list)


def write_batch(
    *,
    token: str,
    scans: list[Scan],
    reports: list[ScanReport],
    now: datetime,
    schedule_from: datetime | None = None,
) -> _BatchWrite:
    """Write one batch's answers back in a constant number of queries; scan by scan if the database refuses.

    `now` is when the answer came; next checks count from `schedule_from` (the cycle's tick; default `now`).
    A batch in which nothing changed costs one UPDATE (no transaction needed for a single statement).
    """
    plan = _plan_batch(scans=scans, reports=reports, now=now, schedule_from=schedule_from or now)
    try:
        if plan.changed or plan.recovered or plan.unreported:
            with transaction.atomic():
                written = _write_rows(token=token, scans=plan.changed, transitions=plan.transitions)
                written += _write_constant(token=token, plan=plan, now=now)
        else:
            written = _write_constant(token=token, plan=plan, now=now)
        return _BatchWrite(plan=plan, written=written)
    except DatabaseError as exc:
        logger.warning("writing a batch of %d failed (%s); writing scan by scan", len(scans), type(exc).__name__)
    return _write_scan_by_scan(token=token, plan=plan, now=now)


def _write_rows(*, token: str, scans: list[Scan], transitions: list[StatusChange]) -> int:
    """Write the per-row news of the scans this refresh still holds; return how many it held."""
    # Only rows this refresh still holds are written: a refresh whose lease ran out must not write stale news.
    pks = [scan.pk for scan in scans]
    held_rows = ScanPoll.objects.select_for_update().filter(claim_token=token, scan_id__in=pks)
    held = set(held_rows.values_list("scan_id", flat=True))
    written = [scan for scan in scans if scan.pk in held]
    Scan.objects.write_each(written, _WRITTEN_FIELDS)
    update_each([scan.poll for scan in written], _POLL_FIELDS)
    StatusChange.objects.bulk_create([change for change in transitions if change.scan.pk in held])
    return len(held)


def _write_constant(*, token: str, plan: _BatchPlan, now: datetime) -> int:
    """Write the scans whose news is the same for all: answered without change, and not reported (yet)."""
    mine = ScanPoll.objects.filter(claim_token=token)
    next_check = plan.schedule_from + _interval()
    # The narrow poll rows only, one set-based UPDATE per next-check delay: the scan rows and their updated_at
    # stay untouched (nothing a page shows changed).
    written = 0
    for delay, pks in _grouped_by_delay(plan.unchanged, plan.unchanged_delays).items():
        written += mine.filter(scan_id__in=pks).update(
            last_checked_at=now, last_reported_at=now, claim_token="", next_check_at=plan.schedule_from + delay
        )
    if plan.recovered:
        # Just recovered from an error: the error goes from the page, and back to every interval, like any change.
        Scan.objects.filter(pk__in=plan.recovered, poll__claim_token=token).write(
            last_check_error="", check_failures=0
        )
        written += mine.filter(scan_id__in=plan.recovered).update(
            last_checked_at=now, last_reported_at=now, claim_token="", next_check_at=next_check
        )
    if plan.unreported:
        Scan.objects.filter(pk__in=plan.unreported, poll__claim_token=token).write(
            last_check_error="Not reported in Protecto's last answer"
        )
        written += mine.filter(scan_id__in=plan.unreported).update(claim_token="", next_check_at=next_check)
    return written


def _grouped_by_delay(pks: list[int], delays: dict[int, timedelta]) -> dict[timedelta, list[int]]:
    grouped: dict[timedelta, list[int]] = {}
    for pk in pks:
        grouped.setdefault(delays.get(pk, _interval()), []).append(pk)
    return grouped


def _write_scan_by_scan(*, token: str, plan: _BatchPlan, now: datetime) -> _BatchWrite:
    """Write each scan in its own savepoint, so a row the database refuses costs that scan alone."""
    result = _BatchWrite(plan=plan)
    for scan in plan.changed:
        transitions = [change for change in plan.transitions if change.scan is scan]
        try:
            with transaction.atomic():
                result.written += _write_rows(token=token, scans=[scan], transitions=transitions)
        except DatabaseError as exc:
            failure = _record_write_failure(token=token, scan=scan, error=exc, schedule_from=plan.schedule_from)
            result.failures.append(failure)
    try:
        with transaction.atomic():
            result.written += _write_constant(token=token, plan=plan, now=now)
    except DatabaseError as exc:
        count = len(plan.unchanged) + len(plan.recovered) + len(plan.unreported)
        result.failures.extend([f"could not save: {type(exc).__name__}"] * count)
    return result


def _record_write_failure(*, token: str, scan: Scan, error: DatabaseError, schedule_from: datetime) -> str:
    """Release a scan whose answer could not be written, saying why; return the reason."""
    reason = redact(
        f"Could not save Protecto's answer: {type(error).__name__}: {error}", settings.PROTECTO_AUTH_TOKEN
    )
    reason = one_line(reason, limit=500)
    logger.warning("scan %s: %s", scan.tracking_id, reason)
    try:
        with transaction.atomic():
            mine = Scan.objects.filter(pk=scan.pk, poll__claim_token=token)
            mine.write(last_check_error=reason, check_failures=F("check_failures") + 1)
            ScanPoll.objects.filter(scan_id=scan.pk, claim_token=token).update(
                claim_token="", next_check_at=schedule_from + _interval()
            )
    except DatabaseError:
        logger.exception("could not record the write failure of scan %s", scan.tracking_id)
    return reason


def release_failed(*, token: str, error: ProtectoError, schedule_from: datetime) -> None:
    """Give back a batch whose request failed: statuses untouched, next try after one interval."""
    with transaction.atomic():
        Scan.objects.filter(poll__claim_token=token).write(
            last_check_error=str(error)[:1000], check_failures=F("check_failures") + 1
        )
        ScanPoll.objects.filter(claim_token=token).update(
            claim_token="", next_check_at=schedule_from + _interval()
        )
