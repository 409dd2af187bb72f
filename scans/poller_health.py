"""The poller's health: is the dashboard current, and what did the last refresh cycles say about the API.

One place for staleness, read by the header, /healthz, the stale-poller alert and the watchdog.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max, Min, Q

from scans.models import RefreshRun, Scan

# A refresh that succeeded, for staleness: it polled everything due (ok), found nothing due (idle), or answered for
# at least some scans though some batches failed or answers were missing (partial, degraded: their API trouble is
# the API state's business and the API-down alert's, not the poller's).
REFRESH_SUCCEEDED = Q(outcome__in=(RefreshRun.Outcome.OK, RefreshRun.Outcome.IDLE)) | Q(
    outcome__in=(RefreshRun.Outcome.PARTIAL, RefreshRun.Outcome.DEGRADED), ids_answered__gt=0
)
# Cycles that say something about the API: finished, and not cut short by a dying worker.
API_VERDICTS = ~Q(outcome__in=(RefreshRun.Outcome.RUNNING, RefreshRun.Outcome.ABANDONED))
API_FAILING = (RefreshRun.Outcome.FAILED, RefreshRun.Outcome.AUTH_REFUSED, RefreshRun.Outcome.DEGRADED)


def human_age(age: timedelta) -> str:
    """An age as people say it: "45 s", "4 min", "2 h 05 min", "3 days"."""
    seconds = max(int(age.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} days"


@dataclass(frozen=True)
class PollerHealth:
    """Whether the poller is keeping the dashboard current, and what the last cycles said about the API.

    `last_success_at` is the end of the latest successful refresh (REFRESH_SUCCEEDED), or the last progress of a
    cycle still running that made progress within the staleness limit: a long cycle is not a dead poller.
    Stale means: scans are waiting to be polled and nothing succeeded for STALE_AFTER_INTERVALS intervals (counted
    from the oldest active scan's creation when nothing ever succeeded). With nothing to poll it is never stale.
    """

    now: datetime
    stale_after: timedelta
    has_active_scans: bool
    last_success_at: datetime | None
    # The latest finished cycle that is a verdict on the API (not running, not abandoned), whatever its outcome.
    last_run: RefreshRun | None
    # Where the staleness clock starts: the last success, else when the oldest active scan was added.
    since: datetime | None

    @property
    def stale(self) -> bool:
        return self.has_active_scans and self.since is not None and self.now - self.since > self.stale_after

    @property
    def stale_began_at(self) -> datetime | None:
        """When the current stale episode began (the clock's start plus the limit), None when fresh."""
        return self.since + self.stale_after if self.stale else None

    @property
    def state(self) -> str:
        """ "stale", "never" (no successful refresh yet, not overdue) or "fresh"."""
        if self.stale:
            return "stale"
        return "never" if self.last_success_at is None else "fresh"

    @property
    def age(self) -> timedelta | None:
        """Time since the last success; for a poller that never succeeded, how long it has been waited for."""
        return self.now - self.since if self.since else None

    @property
    def age_text(self) -> str:
        return human_age(self.age) if self.age is not None else "never"

    @property
    def cycles_stopped(self) -> bool:
        """Stale, and no cycle of any outcome ended within the limit either: the poller itself is not running.

        Cycles that run but fail are the API alerts' business (down, token refused); this one is the watchdog's.
        """
        if not self.stale:
            return False
        last_end = self.last_run.finished_at if self.last_run else None
        return last_end is None or self.now - last_end > self.stale_after

    @property
    def api_state(self) -> str:
        """The last finished cycle's verdict on the API: ok, degraded, failed, auth_refused or unknown."""
        if self.last_run is None:
            return "unknown"
        if self.last_run.outcome in API_FAILING:
            return self.last_run.outcome
        return "ok"

    @property
    def api_failing(self) -> bool:
        return self.api_state in API_FAILING

    @property
    def version_key(self) -> str:
        """What the header's "nothing changed" token needs: staleness and, while stale, its age in minutes."""
        return f"stale-{int(self.age.total_seconds() // 60)}" if self.stale else "live"


def poller_health(*, now: datetime) -> PollerHealth:
    """The poller's freshness and the API's last verdict, in four small indexed queries at most."""
    stale_after = timedelta(seconds=settings.STALE_AFTER_INTERVALS * settings.REFRESH_INTERVAL_SECONDS)
    active = Scan.objects.active()
    has_active = active.exists()
    success = RefreshRun.objects.filter(REFRESH_SUCCEEDED).values_list("finished_at", flat=True).first()
    progress = RefreshRun.objects.filter(
        outcome=RefreshRun.Outcome.RUNNING, last_progress_at__gt=now - stale_after
    ).aggregate(latest=Max("last_progress_at"))["latest"]
    last_success = max(filter(None, (success, progress)), default=None)
    since = last_success
    if since is None and has_active:
        since = active.aggregate(oldest=Min("created_at"))["oldest"]
    return PollerHealth(
        now=now,
        stale_after=stale_after,
        has_active_scans=has_active,
        last_success_at=last_success,
        last_run=RefreshRun.objects.filter(API_VERDICTS).first(),
        since=since,
    )


def refresh_succeeded(run: RefreshRun) -> bool:
    """Row-level twin of REFRESH_SUCCEEDED: whether this finished cycle counts as a successful refresh."""
    if run.outcome in (RefreshRun.Outcome.OK, RefreshRun.Outcome.IDLE):
        return True
    return run.outcome in (RefreshRun.Outcome.PARTIAL, RefreshRun.Outcome.DEGRADED) and run.ids_answered > 0
