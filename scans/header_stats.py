"""The header's figures: counts per status, the last 24 hours of completions, and the poller's health."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from django.core.cache import cache
from django.db.models import CharField, Count, Func
from django.utils import timezone

from scans.counts import tracked_status_counts
from scans.models import RefreshRun, Scan
from scans.poller_health import PollerHealth, poller_health
from scans.selectors import cached_counts, run_seconds, scans_version


class UtcHour(Func):
    """The hour a UTC timestamp falls in, as text "YYYY-MM-DD HH", computed natively (Django's Trunc is a Python
    function called per row on SQLite). SQLite stores timestamps as UTC text, so the hour is its first 13 chars."""

    output_field = CharField()
    arity = 1

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="substr(%(expressions)s, 1, 13)", **extra)

    def as_postgresql(self, compiler, connection, **extra):
        template = "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24')"
        return self.as_sql(compiler, connection, template=template, **extra)


@dataclass
class HourBar:
    start: datetime
    succeeded: int = 0
    failed: int = 0


@dataclass
class HeaderStats:
    counts: dict[str, int]
    finished_24h: int = 0
    failed_24h: int = 0
    p50_run_seconds: float | None = None
    p95_run_seconds: float | None = None
    hours: list[HourBar] = field(default_factory=list)
    poller: PollerHealth | None = None

    @property
    def failure_rate(self) -> float | None:
        return self.failed_24h / self.finished_24h if self.finished_24h else None

    @property
    def last_run(self) -> RefreshRun | None:
        return self.poller.last_run if self.poller else None

    @property
    def last_success_at(self) -> datetime | None:
        return self.poller.last_success_at if self.poller else None

    @property
    def api_failing(self) -> bool:
        return bool(self.poller and self.poller.api_failing)


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


# The 24 h figures (rate, percentiles, the hourly chart) are recomputed when a scan finishes (the finished counts
# are in the key, so they never disagree with the counts beside them) and otherwise at most this often, as the
# day's window moves on.
DAY_CACHE_SECONDS = 60


def dashboard_header_stats(*, now: datetime) -> HeaderStats:
    """Counts per status, the last 24 h of completions (rate, percentiles, per hour) and the poller's health.

    The counts are cached like the list's; the 24 h figures until a scan finishes or DAY_CACHE_SECONDS pass; the
    poller's health is read every time.
    """
    counts = cached_counts("counts", (), lambda: tracked_status_counts(now=now), now=now)
    minute = int(now.timestamp()) // DAY_CACHE_SECONDS
    key = f"scans:day:{minute}:{counts['success']}:{counts['failed']}"
    stats = cache.get_or_set(key, lambda: _last_day(now=now), DAY_CACHE_SECONDS * 2)
    return replace(stats, counts=counts, poller=poller_health(now=now))


def _last_day(*, now: datetime) -> HeaderStats:
    """The 24 h figures: completions per hour, the failure rate's parts, run time percentiles."""
    stats = HeaderStats(counts={})
    first_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    stats.hours = [HourBar(start=first_hour + timedelta(hours=n)) for n in range(24)]
    finished = Scan.objects.finished().filter(ended_at__gte=first_hour)
    # Summed and ranked by the database: a day of finished scans never travels to Python.
    per_hour = finished.annotate(hour=UtcHour("ended_at")).values_list("hour", "status")
    for hour, status, n in per_hour.annotate(n=Count("*")).order_by():
        start = datetime.strptime(hour, "%Y-%m-%d %H").replace(tzinfo=UTC)
        bar = stats.hours[min(23, int((start - first_hour).total_seconds() // 3600))]
        stats.finished_24h += n
        if status == Scan.Status.FAILED:
            stats.failed_24h += n
            bar.failed += n
        else:
            bar.succeeded += n
    timed = finished.filter(started_at__isnull=False).annotate(seconds=run_seconds())
    ranked = timed.order_by("seconds").values_list("seconds", flat=True)
    total = timed.count()
    for attribute, fraction in (("p50_run_seconds", 0.50), ("p95_run_seconds", 0.95)):
        if total:  # nearest rank, as percentile() does
            setattr(stats, attribute, max(ranked[max(1, math.ceil(fraction * total)) - 1], 0.0))
    return stats


def dashboard_last_run() -> RefreshRun | None:
    """The most recent refresh cycle, running or finished."""
    return RefreshRun.objects.first()


def header_version(*, now: datetime | None = None) -> str:
    """Changes when a scan changes, a refresh cycle ends, or the poller goes stale (then every minute it stays so).

    Staleness is in the token because a dead poller changes nothing else: without it an open page would never
    learn that its figures stopped being current.
    """
    now = now or timezone.now()
    run = RefreshRun.objects.exclude(outcome=RefreshRun.Outcome.RUNNING).values_list("pk", flat=True).first()
    return f"{scans_version()}-{run or 0}-{poller_health(now=now).version_key}"
