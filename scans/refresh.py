"""The refresh engine: claim due scans in batches, poll each batch, add its counts to the cycle's RefreshRun.

Claims are the single source of truth: a conditional update gives a batch of due scans a claim token and a lease
counted from the claim (no lock held across HTTP), so any number of workers can poll at once without polling one
scan twice, and a batch whose worker died is free again when its lease runs out. A claim token starts with its
run's id, so "no scan still holds a token of this run" says the run's last batch is done.

Two drivers share this: on Celery, beat's tick only dispatches (refresh_dispatch claims up to
REFRESH_MAX_BATCHES_IN_FLIGHT batches and a task per batch polls it, then claims the next while the run is the
newest), so every worker on every machine shares a cycle; `scans_refresh_due` (the refresh_scans command, the
tests) claims and polls batch after batch in-process. Each batch adds its counts to the run with F() increments;
whoever sees the run's last batch done closes it (compare-and-set on `running`, so exactly one closer). The
outcome says how much the cycle could see (scans/refresh_write.py writes the answers back); a run whose worker
died is closed as abandoned by the next dispatch.
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
from django.db.models import F, TextField, Value
from django.db.models.functions import Concat
from django.utils import timezone

from protecto import ProtectoAuthError, ProtectoClient, ProtectoError
from scans.heartbeat import heartbeat_ping
from scans.models import RefreshRun, Scan, ScanPoll
from scans.refresh_write import release_failed, write_batch

logger = logging.getLogger(__name__)

# Time to write a batch back after its answer arrived, added to the request's worst case to make the lease.
LEASE_MARGIN = timedelta(seconds=20)
# Stop claiming new batches for a run after this long, so a run ends well inside the task's time limit.
CYCLE_DEADLINE_SECONDS = 200
# A batch is claimed only if even its slowest possible request ends within this (the task's soft limit is 270 s).
CYCLE_BUDGET_SECONDS = 250
# After this many failed batches in a row the API is taken to be down: the rest waits for the next cycle
# instead of spending minutes on retries that will fail the same way.
MAX_CONSECUTIVE_BATCH_FAILURES = 3
REFRESH_RUN_RETENTION = timedelta(days=7)


def protecto_client_from_settings() -> ProtectoClient:
    """A client configured from the PROTECTO_* settings."""
    return ProtectoClient(**_client_options())


def _client_options() -> dict:
    return {
        "base_url": settings.PROTECTO_API_URL,
        "token": settings.PROTECTO_AUTH_TOKEN,
        "status_path": settings.PROTECTO_STATUS_PATH,
        "timeout": settings.PROTECTO_TIMEOUT_SECONDS,
        "deadline": settings.PROTECTO_DEADLINE_SECONDS,
        "max_answer_bytes": settings.PROTECTO_MAX_ANSWER_BYTES,
        "batch_size": settings.PROTECTO_BATCH_SIZE,
        "max_retries": settings.PROTECTO_MAX_RETRIES,
        "backoff": settings.PROTECTO_BACKOFF_SECONDS,
        "tz": zoneinfo.ZoneInfo(settings.PROTECTO_TIMEZONE),
    }


_worker_client: tuple[tuple, ProtectoClient] | None = None


def worker_client() -> ProtectoClient:
    """This process's one client (one keep-alive HTTP session for its lifetime), remade if the settings changed."""
    global _worker_client
    key = tuple(sorted((name, str(value)) for name, value in _client_options().items()))
    if _worker_client is None or _worker_client[0] != key:
        if _worker_client is not None:
            _worker_client[1].close()
        _worker_client = (key, protecto_client_from_settings())
    return _worker_client[1]


def claim_lease(client: ProtectoClient) -> timedelta:
    """How long a claimed batch stays with its refresh: the longest one status request can take, plus a margin.

    A worker that dies mid-batch freezes its scans this long, so it is as short as the request bound allows.
    """
    return timedelta(seconds=client.worst_case_seconds()) + LEASE_MARGIN


def _run_tokens(run_id: int):
    """The poll rows that still hold a claim of this run (its tokens start with the run's id).

    The "not empty" half lets PostgreSQL read the small poll_claim index (claimed rows only) rather than the
    table: it cannot tell by itself that a LIKE 'N-%' match is never empty.
    """
    return ScanPoll.objects.exclude(claim_token="").filter(claim_token__startswith=f"{run_id}-")


def _claim_batch(*, run_id: int, now: datetime, size: int, lease: timedelta) -> tuple[str, int] | None:
    """Claim up to `size` due scans for one batch of the run; return the claim token and how many it got.

    None means nothing is due. A count of 0 means a concurrent refresh claimed these candidates first: the
    caller looks again, since more may be due behind them.
    """
    due = ScanPoll.objects.due(now)
    # The first due rows in the poll_due index's own order: a claim reads about `size` index entries, however
    # many scans are due (ordering by anything from the scans table would sort every due scan per claim).
    candidates = list(due.order_by("next_check_at").values_list("scan_id", flat=True)[:size])
    if not candidates:
        return None
    token = f"{run_id}-{uuid.uuid4().hex[:20]}"
    # The lease runs from the claim, not the cycle's start: a late batch of a long cycle gets its full lease.
    # (A cycle run for a time ahead of the clock, as a backfill or a test may, leases from its own time.)
    held_until = max(timezone.now(), now) + lease
    # Conditional update of the narrow poll rows, by primary key: a concurrent refresh that claimed a row first
    # has moved its next_check_at past now, so the row no longer matches here and stays with that refresh; a scan
    # that turned final meanwhile has no next check.
    return token, due.filter(scan_id__in=candidates).update(next_check_at=held_until, claim_token=token)


def batches_in_flight(*, now: datetime) -> int:
    """Batches claimed and not yet written back: the distinct claim tokens whose lease has not run out."""
    held = ScanPoll.objects.exclude(claim_token="").filter(next_check_at__gt=now)
    return held.values("claim_token").distinct().count()


def batches_allowed() -> int:
    """REFRESH_MAX_BATCHES_IN_FLIGHT, halved while the latest cycle had failed batches (429 after retries, 5xx).

    An API that throttles or fails gets half the concurrent requests until a cycle goes through clean.
    """
    bound = settings.REFRESH_MAX_BATCHES_IN_FLIGHT
    latest = RefreshRun.objects.exclude(outcome=RefreshRun.Outcome.RUNNING).values_list("errors", flat=True)
    return max(1, bound // 2) if latest.first() else bound


def _claim_up_to_bound(*, run_id: int, now: datetime, lease: timedelta) -> list[str]:
    """Claim batches of what was due at `now` (the run's start) until the in-flight bound; return their tokens.

    A run covers what was due at its tick: a scan it polled is due again only after the run's start, so a run
    ends even when the workers are saturated, and what fell due meanwhile goes to the next tick's run.
    """
    room = batches_allowed() - batches_in_flight(now=max(now, timezone.now()))
    tokens: list[str] = []
    while len(tokens) < room:
        claim = _claim_batch(run_id=run_id, now=now, size=settings.PROTECTO_BATCH_SIZE, lease=lease)
        if claim is None:
            break
        if claim[1]:
            tokens.append(claim[0])
    return tokens


@dataclass
class BatchResult:
    """What polling one claimed batch did; its counts are added to the run."""

    run_id: int
    token: str
    asked: int = 0
    answered: int = 0
    changed: int = 0
    api_calls: int = 0
    failed: bool = False  # the request failed, or not one scan could be written
    write_failures: int = 0
    expected: int = 0  # IDs the answer should have reported (not those already NOT FOUND)
    token_refused: bool = False
    errors: list[str] = field(default_factory=list)


def scans_refresh_batch(
    *,
    run_id: int,
    token: str,
    now: datetime | None = None,
    client: ProtectoClient | None = None,
    tick: datetime | None = None,
) -> BatchResult:
    """Ask Protecto for the scans still holding `token`, write the answer back, add the counts to the run.

    Next checks count from the run's tick, not from this batch: a scan polled late in a cycle is then due at the
    next tick like the others (counted from the batch, anything polled more than the due grace into a cycle
    would skip a tick and be checked every other interval). `tick`: the run's start, when the caller knows it.
    """
    now = now or timezone.now()
    result = BatchResult(run_id=run_id, token=token)
    scans = list(Scan.objects.filter(poll__claim_token=token).select_related("poll").order_by("pk"))
    if scans:
        tick = tick or RefreshRun.objects.filter(pk=run_id).values_list("started_at", flat=True).first()
        _poll(result, scans, client or worker_client(), now=now, schedule_from=min(tick or now, now))
    _add_to_run(result)
    return result


def _poll(
    result: BatchResult, scans: list[Scan], client: ProtectoClient, *, now: datetime, schedule_from: datetime
) -> None:
    result.asked = len(scans)
    calls_before = client.requests_made
    try:
        reports = client.fetch_status_batch([scan.tracking_id for scan in scans])
    except Exception as exc:
        result.api_calls = client.requests_made - calls_before
        _batch_failed(result, exc, schedule_from=schedule_from)
        return
    result.api_calls = client.requests_made - calls_before
    written = write_batch(token=result.token, scans=scans, reports=reports, now=now, schedule_from=schedule_from)
    plan = written.plan
    result.answered, result.changed = plan.answered, plan.answers_changed
    result.expected = plan.answered + plan.missing
    if written.failures:
        result.write_failures = len(written.failures)
        result.errors.append(f"{len(written.failures)} scan(s) could not be saved: {written.failures[0]}")
    result.failed = bool(written.failures) and not written.written


def _batch_failed(result: BatchResult, exc: Exception, *, schedule_from: datetime) -> None:
    """Record a failed request on its scans (released, tried again next interval) and on the result."""
    if not isinstance(exc, ProtectoError):
        # A bug in answer handling must cost one batch, not the cycle or the worker.
        logger.exception("refresh batch of %d failed unexpectedly", result.asked)
        exc = ProtectoError(f"Unexpected error while reading Protecto's answer: {type(exc).__name__}")
    logger.warning("refresh batch of %d failed: %s", result.asked, exc)
    result.failed = True
    result.token_refused = isinstance(exc, ProtectoAuthError)
    result.errors.append(str(exc))
    release_failed(token=result.token, error=exc, schedule_from=schedule_from)


def _add_to_run(result: BatchResult) -> None:
    """Add the batch's counts to its run and show the run alive (one UPDATE, safe with batches in parallel)."""
    changes = {
        "ids_asked": F("ids_asked") + result.asked,
        "ids_answered": F("ids_answered") + result.answered,
        "changed": F("changed") + result.changed,
        "api_calls": F("api_calls") + result.api_calls,
        "errors": F("errors") + int(result.failed),
        "write_failures": F("write_failures") + result.write_failures,
        "batches_ok": F("batches_ok") + int(not result.failed),
        "ids_expected": F("ids_expected") + result.expected,
        "last_progress_at": timezone.now(),
    }
    if result.errors:
        lines = "".join(f"{line}\n" for line in result.errors)
        changes["error_text"] = Concat(F("error_text"), Value(lines), output_field=TextField())
    RefreshRun.objects.filter(pk=result.run_id).update(**changes)


@dataclass
class Dispatch:
    """What one beat tick did: the run it opened (None when the in-flight bound was already reached)."""

    run: RefreshRun | None
    tokens: list[str] = field(default_factory=list)


def refresh_dispatch(*, now: datetime | None = None) -> Dispatch:
    """Beat's tick: open a run and claim due scans in batches, up to the in-flight bound; return the claim tokens.

    The caller sends one batch task per token. With the bound already reached (the batches of earlier runs are
    still in the workers) no run is opened: those runs go on claiming while they are the newest.
    """
    now = now or timezone.now()
    lease = claim_lease(worker_client())
    close_abandoned_runs(now=now, lease=lease)
    if batches_in_flight(now=now) >= batches_allowed():
        logger.info("refresh: %d batches still in flight, nothing dispatched this tick", batches_allowed())
        return Dispatch(run=None)
    run = RefreshRun.objects.create(started_at=now)
    return Dispatch(run=run, tokens=_claim_up_to_bound(run_id=run.pk, now=now, lease=lease))


def refresh_after_batch(*, result: BatchResult) -> Dispatch:
    """After a batch task: claim follow-up batches of what was due at the run's start while it is the newest run.

    A failed batch claims nothing more (an API in trouble gets fewer requests); a refused token ends the run.
    """
    run = RefreshRun.objects.filter(pk=result.run_id).first()
    if run is None:
        return Dispatch(run=None)
    if result.token_refused:
        if run.outcome == RefreshRun.Outcome.RUNNING:
            _close(run, _tally_from_run(run, token_refused=True))
        return Dispatch(run=run)
    newest = not RefreshRun.objects.filter(pk__gt=run.pk).exists()
    young = timezone.now() - run.started_at < timedelta(seconds=CYCLE_DEADLINE_SECONDS)
    if run.outcome != RefreshRun.Outcome.RUNNING or result.failed or not newest or not young:
        return Dispatch(run=run)
    lease = claim_lease(worker_client())
    with transaction.atomic():
        # Batches of one run finishing at once take turns (a row lock on PostgreSQL), so counting what is in
        # flight and claiming up to the bound is not done twice on the same count.
        list(RefreshRun.objects.select_for_update().filter(pk=run.pk).values_list("pk", flat=True))
        return Dispatch(run=run, tokens=_claim_up_to_bound(run_id=run.pk, now=run.started_at, lease=lease))


@dataclass
class _Tally:
    """What the outcome needs beyond the run's own counts, known exactly when batches run in-process."""

    batches_ok: int = 0
    expected: int = 0
    reported: int = 0
    token_refused: bool = False
    notes: list[str] = field(default_factory=list)

    def add(self, run: RefreshRun, result: BatchResult) -> None:
        """Count one in-process batch here and on the run object (the database has it already)."""
        self.batches_ok += not result.failed
        self.expected += result.expected
        self.reported += result.answered
        self.token_refused = result.token_refused
        run.ids_asked += result.asked
        run.ids_answered += result.answered
        run.changed += result.changed
        run.api_calls += result.api_calls
        run.errors += result.failed
        run.write_failures += result.write_failures
        run.batches_ok += not result.failed
        run.ids_expected += result.expected
        run.error_text += "".join(f"{line}\n" for line in result.errors)


def _tally_from_run(run: RefreshRun, *, token_refused: bool = False) -> _Tally:
    """The tally of a run whose batches ran in workers, from the counts each batch added to the run."""
    return _Tally(
        batches_ok=run.batches_ok,
        expected=run.ids_expected,
        reported=run.ids_answered,
        token_refused=token_refused,
    )


def refresh_finish(*, run_id: int) -> RefreshRun | None:
    """Close the run if none of its batches is still claimed; return it if this call closed it.

    Compare-and-set on `running`: of the batches that finish last at the same moment, exactly one closes it.
    """
    if _run_tokens(run_id).exists():
        return None
    run = RefreshRun.objects.filter(pk=run_id, outcome=RefreshRun.Outcome.RUNNING).first()
    return _close(run, _tally_from_run(run)) if run else None


def _close(run: RefreshRun, tally: _Tally) -> RefreshRun | None:
    """Record the run's outcome, unless another closer did first; ping the heartbeat and prune old runs."""
    notes = [*run.error_text.splitlines(), *tally.notes]
    if tally.expected and tally.reported * 100 < settings.REFRESH_MIN_COVERAGE_PERCENT * tally.expected:
        notes.append(f"Protecto's answers reported {tally.reported} of {tally.expected} IDs asked")
    run.outcome = _outcome(run, tally)
    run.finished_at = timezone.now()
    run.error_text = "\n".join(dict.fromkeys(line for line in notes if line))[:4000]
    closed = RefreshRun.objects.filter(pk=run.pk, outcome=RefreshRun.Outcome.RUNNING).update(
        outcome=run.outcome, finished_at=run.finished_at, error_text=run.error_text
    )
    if closed != 1:
        return None
    # Recorded first: an outside dead-man's switch hears from us only after a cycle that really succeeded.
    heartbeat_ping(run=run)
    # A run an alert names as its outage's first is kept: it is that alert's identity (Alert.outage).
    RefreshRun.objects.filter(
        started_at__lt=run.started_at - REFRESH_RUN_RETENTION, outage_alerts__isnull=True
    ).delete()
    return run


def _outcome(run: RefreshRun, tally: _Tally) -> str:
    """The cycle's outcome: never OK while it was partly blind (failed batches, thin answers, unsaved scans)."""
    if tally.token_refused:
        return RefreshRun.Outcome.AUTH_REFUSED
    if not tally.batches_ok:
        return RefreshRun.Outcome.FAILED if run.errors else RefreshRun.Outcome.IDLE
    if tally.expected and not tally.reported:
        return RefreshRun.Outcome.FAILED  # answers arrived, but none reported anything asked
    if tally.reported * 100 < settings.REFRESH_MIN_COVERAGE_PERCENT * tally.expected:
        return RefreshRun.Outcome.DEGRADED
    if run.errors or run.write_failures:
        return RefreshRun.Outcome.PARTIAL
    return RefreshRun.Outcome.OK


def close_abandoned_runs(*, now: datetime, lease: timedelta) -> int:
    """Close as abandoned the runs still `running` with no progress for longer than one lease.

    A live run records progress after every batch, and no batch outlives its lease (the client's worst case and a
    margin), so a run silent for longer has lost its worker (or its batch tasks).
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


def scans_refresh_due(
    *, now: datetime | None = None, client: ProtectoClient | None = None, ignore_schedule: bool = False
) -> RefreshRun:
    """Run one refresh cycle in this process: claim and poll due batches one after another, then close the run.

    The same claims, batches and run as the Celery fan-out. `ignore_schedule` polls every non-final scan now,
    whatever its next_check_at.
    """
    now = now or timezone.now()
    client = client or worker_client()
    lease = claim_lease(client)
    close_abandoned_runs(now=now, lease=lease)
    run = RefreshRun.objects.create(started_at=now)
    if ignore_schedule:
        ScanPoll.objects.filter(scan__in=Scan.objects.active(), claim_token="").update(next_check_at=now)
    tally = _Tally()
    try:
        _poll_inline(run=run, client=client, now=now, lease=lease, tally=tally)
    finally:
        closed = _close(run, tally)
    return closed or RefreshRun.objects.get(pk=run.pk)


def _poll_inline(
    *, run: RefreshRun, client: ProtectoClient, now: datetime, lease: timedelta, tally: _Tally
) -> None:
    """Claim and poll batches until nothing is due, the deadline passes or the API is taken to be down."""
    started = time.monotonic()
    deadline, budget_end = started + CYCLE_DEADLINE_SECONDS, started + CYCLE_BUDGET_SECONDS
    slowest_batch = client.worst_case_seconds()
    failures_in_a_row = 0
    while time.monotonic() < deadline and time.monotonic() + slowest_batch < budget_end:
        claim = _claim_batch(run_id=run.pk, now=now, size=client.batch_size, lease=lease)
        if claim is None:
            return
        if not claim[1]:
            continue
        result = scans_refresh_batch(run_id=run.pk, token=claim[0], now=now, client=client, tick=run.started_at)
        tally.add(run, result)
        if result.token_refused:
            return  # every other batch would be refused the same way
        failures_in_a_row = failures_in_a_row + 1 if result.failed else 0
        if failures_in_a_row >= MAX_CONSECUTIVE_BATCH_FAILURES:
            tally.notes.append(f"Stopped this cycle after {failures_in_a_row} failed batches in a row")
            return
