"""Reads for the pages: the filtered, sorted, counted querysets and the header's figures."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from django.core.cache import cache
from django.core.paginator import Page, Paginator
from django.db.models import Case, Count, F, FloatField, Func, IntegerField, Max, Q, QuerySet, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.functional import cached_property

from scans.models import Alert, AlertMute, RefreshRun, Scan, StatusChange, stuck_condition
from scans.poller_health import PollerHealth, human_age, poller_health

__all__ = ["PollerHealth", "human_age", "poller_health"]

STUCK = "STUCK"
# What the status filter accepts: a status, or STUCK (past the stuck limits, whatever the status).
STATUS_VALUES = (*Scan.Status.values, STUCK)
PER_PAGE_CHOICES = (25, 50, 100)
DEFAULT_PER_PAGE = 50
# What the status chips count, in display order: (key, label, the status filter value it sets; None: no filter).
CHIPS = (
    ("all", "All", None),
    ("pending", "Pending", Scan.Status.PENDING),
    ("in_progress", "In progress", Scan.Status.IN_PROGRESS),
    ("success", "Succeeded", Scan.Status.SUCCESS),
    ("failed", "Failed", Scan.Status.FAILED),
    ("unknown", "Unknown", Scan.Status.UNKNOWN),
    ("not_found", "Not found", Scan.Status.NOT_FOUND),
    ("stuck", "Stuck", STUCK),
)


class SecondsBetween(Func):
    """end - start in seconds, computed by the database itself (no per-row Python function on SQLite)."""

    output_field = FloatField()
    arity = 2

    def as_sqlite(self, compiler, connection, **extra):
        template = "((julianday(%(expressions)s)) * 86400.0)"
        return self.as_sql(compiler, connection, template=template, arg_joiner=") - julianday(", **extra)

    def as_postgresql(self, compiler, connection, **extra):
        template = "EXTRACT(EPOCH FROM (%(expressions)s))"
        return self.as_sql(compiler, connection, template=template, arg_joiner=" - ", **extra)


def run_seconds() -> SecondsBetween:
    return SecondsBetween(F("ended_at"), F("started_at"))


# Sort keys offered in the URL: name -> expression sorted ascending; "-name" sorts descending.
SORTS = {
    "submitted": lambda now: Coalesce("submitted_at", "created_at"),
    "started": lambda now: F("started_at"),
    "ended": lambda now: F("ended_at"),
    "run_time": lambda now: run_seconds(),
    "last_change": lambda now: F("last_changed_at"),
}
# Never NULL (created_at always is set), so sorted without NULLS LAST: PostgreSQL can then read it from an index.
_NEVER_NULL = {"submitted"}
PROBLEMS_FIRST = "problems"
DEFAULT_SORT = "-submitted"
SORT_CHOICES = (
    ("-submitted", "Newest submitted"),
    ("submitted", "Oldest submitted"),
    ("-started", "Recently started"),
    ("started", "Earliest started"),
    ("-ended", "Recently ended"),
    ("ended", "Earliest ended"),
    ("-run_time", "Longest run time"),
    ("run_time", "Shortest run time"),
    ("-last_change", "Recently changed"),
    ("last_change", "Least recently changed"),
    (PROBLEMS_FIRST, "Failed & stuck first"),
)


@dataclass(frozen=True)
class ScanFilters:
    """What the list shows: every field comes from the query string."""

    status: str = ""
    q: str = ""
    source: str = ""
    submitted_from: date | None = None
    submitted_to: date | None = None
    sort: str = DEFAULT_SORT
    archived: bool = False
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def scans_matching(*, filters: ScanFilters) -> QuerySet[Scan]:
    """Scans matching every filter except the status (the chips count per status over this set)."""
    qs = Scan.objects.archived() if filters.archived else Scan.objects.tracked()
    if filters.q:
        qs = qs.filter(Q(tracking_id__icontains=filters.q) | Q(label__icontains=filters.q))
    if filters.source:
        qs = qs.filter(data_source=filters.source)
    if filters.submitted_from:
        qs = qs.filter(submitted_at__gte=_day_start(filters.submitted_from))
    if filters.submitted_to and filters.submitted_to < date.max:  # date.max has no next day: no upper bound
        qs = qs.filter(submitted_at__lt=_day_start(filters.submitted_to + timedelta(days=1)))
    return qs


def scan_status_counts(qs: QuerySet[Scan], *, now: datetime) -> dict[str, int]:
    """How many scans of `qs` are in each status, and stuck, in one query."""
    by_status = {
        key: Count("pk", filter=Q(status=status)) for key, _, status in CHIPS if status and status != STUCK
    }
    return qs.aggregate(all=Count("pk"), stuck=Count("pk", filter=stuck_condition(now)), **by_status)


def tracked_status_counts(*, now: datetime) -> dict[str, int]:
    """The header's counts over every tracked scan: a GROUP BY and a stuck count, both from one index.

    Same keys as scan_status_counts; faster on the whole table than its one-pass FILTER aggregate.
    """
    tracked = Scan.objects.tracked()
    by_status = dict(tracked.values_list("status").annotate(n=Count("pk")))
    counts = {key: by_status.get(status, 0) for key, _, status in CHIPS if status and status != STUCK}
    counts["all"] = sum(by_status.values())
    counts["stuck"] = tracked.stuck(now).count()
    return counts


def _with_status(qs: QuerySet[Scan], status: str, now: datetime) -> QuerySet[Scan]:
    if status == STUCK:
        return qs.stuck(now)
    return qs.filter(status=status) if status else qs


def _ordered(qs: QuerySet[Scan], sort: str, now: datetime) -> QuerySet[Scan]:
    if sort == PROBLEMS_FIRST:
        rank = Case(
            When(status=Scan.Status.FAILED, then=Value(0)),
            When(stuck_condition(now), then=Value(1)),
            default=Value(2),
            output_field=IntegerField(),
        )
        return qs.order_by(rank, Coalesce("submitted_at", "created_at").desc(), "-pk")
    key = sort.removeprefix("-")
    expression = SORTS[key](now)
    nulls = {} if key in _NEVER_NULL else {"nulls_last": True}
    if sort.startswith("-"):
        return qs.order_by(expression.desc(**nulls), "-pk")
    return qs.order_by(expression.asc(**nulls), "pk")


class _CountedPaginator(Paginator):
    """A paginator told its total, because the status counts already hold it: one COUNT query fewer."""

    def __init__(self, object_list, per_page: int, *, total: int) -> None:
        super().__init__(object_list, per_page)
        self._total = total

    @cached_property
    def count(self) -> int:
        return self._total


@dataclass
class ScanListPage:
    page: Page
    counts: dict[str, int]


# Columns the list renders; the raw answer and the poller's bookkeeping stay in the database.
LIST_COLUMNS = (
    "tracking_id",
    "status",
    "raw_status",
    "submitted_at",
    "started_at",
    "ended_at",
    "error_message",
    "label",
    "data_source",
    "created_at",
    "last_checked_at",
    "last_changed_at",
    "last_check_error",
    "archived_at",
)


def scan_list_for_dashboard(*, filters: ScanFilters, now: datetime) -> ScanListPage:
    """One page of the list and the per-status counts, in two queries."""
    matching = scans_matching(filters=filters)
    counts = scan_status_counts(matching, now=now)
    chip = next((key for key, _, status in CHIPS if status == filters.status), "all")
    rows = _ordered(_with_status(matching, filters.status, now), filters.sort, now).only(*LIST_COLUMNS)
    paginator = _CountedPaginator(rows, filters.per_page, total=counts[chip])
    return ScanListPage(page=paginator.get_page(filters.page), counts=counts)


def scans_version() -> str:
    """A token that changes whenever any scan changes: cheap (one indexed MAX)."""
    latest = Scan.objects.aggregate(latest=Max("updated_at"))["latest"]
    return f"{latest.timestamp():.6f}" if latest else "0"


def scan_by_tracking_id(tracking_id: str) -> Scan | None:
    """The scan with this tracking ID, or None."""
    return Scan.objects.filter(tracking_id=tracking_id).first()


DATA_SOURCES_CACHE_SECONDS = 60


def data_sources() -> list[str]:
    """Every data source seen, for the filter's choices; cached a minute (a DISTINCT over every scan is slow)."""

    def read() -> list[str]:
        named = Scan.objects.exclude(data_source="").order_by("data_source")
        return list(named.values_list("data_source", flat=True).distinct())

    return cache.get_or_set("scans:data-sources", read, DATA_SOURCES_CACHE_SECONDS)


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


def dashboard_header_stats(*, now: datetime) -> HeaderStats:
    """Counts per status, the last 24 h of completions (rate, percentiles, per hour) and the poller's health."""
    stats = HeaderStats(counts=tracked_status_counts(now=now))
    first_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    stats.hours = [HourBar(start=first_hour + timedelta(hours=n)) for n in range(24)]
    run_times: list[float] = []
    finished = (
        Scan.objects.finished()
        .filter(ended_at__gte=first_hour)
        .annotate(seconds=run_seconds())
        .values_list("status", "ended_at", "seconds")
    )
    for status, ended_at, seconds in finished.iterator(chunk_size=2000):
        bar = stats.hours[min(23, int((ended_at - first_hour).total_seconds() // 3600))]
        stats.finished_24h += 1
        if status == Scan.Status.FAILED:
            stats.failed_24h += 1
            bar.failed += 1
        else:
            bar.succeeded += 1
        if seconds is not None:
            run_times.append(max(seconds, 0.0))
    run_times.sort()
    stats.p50_run_seconds = percentile(run_times, 0.50)
    stats.p95_run_seconds = percentile(run_times, 0.95)
    stats.poller = poller_health(now=now)
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


@dataclass
class TimelineStep:
    status: str
    label: str
    entered_at: datetime
    left_at: datetime | None
    duration: timedelta | None
    current: bool


def scan_timeline(*, scan: Scan, now: datetime) -> list[TimelineStep]:
    """The scan's observed statuses in order, with the time spent in each (the current one until now)."""
    changes = list(StatusChange.objects.filter(scan=scan).order_by("observed_at", "pk"))
    labels = dict(Scan.Status.choices)
    steps = []
    for index, change in enumerate(changes):
        following = changes[index + 1] if index + 1 < len(changes) else None
        current = following is None
        left_at = following.observed_at if following else (None if scan.is_final else now)
        steps.append(
            TimelineStep(
                status=change.to_status,
                label=labels.get(change.to_status, change.to_status),
                entered_at=change.observed_at,
                left_at=left_at if following else None,
                duration=(left_at - change.observed_at) if left_at else None,
                current=current,
            )
        )
    return steps


ALERTS_PER_PAGE = 50


def alert_page(*, kind: str = "", state: str = "", q: str = "", page: str | None = None) -> Page:
    """One page of the outbox, newest first; `state="failing"` means waiting after a failed send."""
    alerts = Alert.objects.select_related("scan").defer("body_text", "body_html")
    if kind:
        alerts = alerts.filter(kind=kind)
    if state == "failing":
        alerts = alerts.filter(state=Alert.State.PENDING).exclude(last_error="")
    elif state:
        alerts = alerts.filter(state=state)
    if q:
        alerts = alerts.filter(Q(scan__tracking_id__icontains=q) | Q(scan__label__icontains=q))
    return Paginator(alerts, ALERTS_PER_PAGE).get_page(page)


def scan_is_muted(*, scan: Scan) -> bool:
    """Whether alerts about this one scan are muted."""
    return AlertMute.objects.filter(scan=scan).exists()


def alerts_for_scan(*, scan: Scan) -> list[Alert]:
    """The scan's alert history, newest first."""
    return list(Alert.objects.filter(scan=scan).defer("body_text", "body_html").select_related("digest"))
