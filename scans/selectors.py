"""Reads for the pages: the filtered, sorted, counted querysets and the header's figures."""

from __future__ import annotations

import hashlib
import math
from dataclasses import astuple, dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta

from django.core.cache import cache
from django.core.paginator import Page, Paginator
from django.db.models import CharField, Count, F, FloatField, Func, Max, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.functional import cached_property

from scans.counts import tracked_status_counts
from scans.models import Alert, AlertMute, RefreshRun, Scan, StatusChange, stuck_condition
from scans.poller_health import PollerHealth, human_age, poller_health
from scans.search import scan_search_condition

__all__ = ["PollerHealth", "human_age", "poller_health", "tracked_status_counts"]

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
        qs = qs.filter(scan_search_condition(filters.q))
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


# Counts are kept this long, keyed by scans_version(): any change to a scan makes a new key at once. The time
# bucket is in the key too, so the stuck count (which moves with the clock alone) and a delete (which leaves
# scans_version() alone) are at most this many seconds behind.
COUNTS_CACHE_SECONDS = 10


def _cached_counts(name: str, key_parts: tuple, read, *, now: datetime, version: str | None = None):
    """read(), shared by every request and poll until a scan changes (`version`) or the time bucket turns."""
    bucket = int(now.timestamp()) // COUNTS_CACHE_SECONDS
    parts = hashlib.sha256(repr(key_parts).encode()).hexdigest()[:24]
    key = f"scans:{name}:{version or scans_version()}:{bucket}:{parts}"
    return cache.get_or_set(key, read, COUNTS_CACHE_SECONDS * 2)


def _with_status(qs: QuerySet[Scan], status: str, now: datetime) -> QuerySet[Scan]:
    if status == STUCK:
        return qs.stuck(now)
    return qs.filter(status=status) if status else qs


def _ordered(qs: QuerySet[Scan], sort: str, now: datetime) -> QuerySet[Scan]:
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


class _ProblemsFirst:
    """Parts in the problems-first order (newest submitted first in each), read one after another as one
    sequence. Each part is sliced on its own, so the Paginator's OFFSET walks one part's index instead of sorting
    a computed rank over the whole table; a page spanning parts is still one query (UNION ALL)."""

    def __init__(self, parts: list[tuple[QuerySet[Scan], int]]) -> None:
        self.parts = parts

    def count(self) -> int:
        return sum(size for _, size in self.parts)

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, window: slice) -> list[Scan]:
        sliced = []
        offset = 0
        for part, size in self.parts:
            start, stop = max(window.start - offset, 0), min(window.stop - offset, size)
            if start < stop:
                sliced.append(part[start:stop])
            offset += size
        if len(sliced) < 2:
            return list(sliced[0]) if sliced else []
        selects, params = [], []
        for number, part in enumerate(sliced):
            sql, part_params = part.query.sql_with_params()
            selects.append(f"SELECT {number} AS problems_part, part{number}.* FROM ({sql}) part{number}")
            params += part_params
        union = " UNION ALL ".join(selects)
        order = "problems_part, COALESCE(submitted_at, created_at) DESC, id DESC"
        return list(Scan.objects.raw(f"SELECT * FROM ({union}) problems ORDER BY {order}", params))


def _problems_first(
    qs: QuerySet[Scan], filters: ScanFilters, counts: dict[str, int], now: datetime
) -> _ProblemsFirst:
    """Failed, then stuck, then the rest, each newest submitted first: three index-ordered parts."""
    order = (Coalesce("submitted_at", "created_at").desc(), "-pk")
    failed = qs.filter(status=Scan.Status.FAILED).order_by(*order)
    stuck = qs.stuck(now).order_by(*order)
    rest = qs.exclude(status=Scan.Status.FAILED).exclude(stuck_condition(now)).order_by(*order)
    n_failed = counts["failed"] if filters.status in ("", Scan.Status.FAILED) else 0
    if filters.status in ("", STUCK):
        n_stuck = counts["stuck"]
    else:
        n_stuck = stuck.count() if filters.status in (Scan.Status.PENDING, Scan.Status.IN_PROGRESS) else 0
    total = counts[_chip(filters.status)]
    return _ProblemsFirst([(failed, n_failed), (stuck, n_stuck), (rest, max(total - n_failed - n_stuck, 0))])


def _chip(status: str) -> str:
    return next((key for key, _, value in CHIPS if value == status), "all")


@dataclass
class ScanListPage:
    page: Page
    counts: dict[str, int]
    version: str = ""
    # How many rows the filters match, when that is more than the list pages through (MAX_LISTED).
    beyond_cap: int = 0


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
    "last_changed_at",
    "last_check_error",
    "archived_at",
)


# The list pages through at most this many rows; past it the page asks for narrower filters. Every page up to it
# is an index walk of at most this many entries, so the last reachable page costs about what the first does.
MAX_LISTED = 10_000


def scan_list_counts(*, filters: ScanFilters, now: datetime, version: str | None = None) -> dict[str, int]:
    """The chips' counts for these filters, cached (see COUNTS_CACHE_SECONDS); `version`: scans_version().

    Without a search, source or date filter they are the header's counts: a GROUP BY over one index.
    """
    narrowed = replace(filters, status="", sort=DEFAULT_SORT, page=1, per_page=DEFAULT_PER_PAGE)
    if narrowed == ScanFilters():
        return _cached_counts("counts", (), lambda: tracked_status_counts(now=now), now=now, version=version)
    matching = scans_matching(filters=filters)
    read = lambda: scan_status_counts(matching, now=now)  # noqa: E731
    return _cached_counts("counts", astuple(narrowed), read, now=now, version=version)


def scan_list_for_dashboard(*, filters: ScanFilters, now: datetime) -> ScanListPage:
    """One page of the list (at most MAX_LISTED rows deep), the per-status counts, and the version they show."""
    version = scans_version()
    counts = scan_list_counts(filters=filters, now=now, version=version)
    matching = _with_status(scans_matching(filters=filters), filters.status, now).only(*LIST_COLUMNS)
    # The poll row's last check, joined by primary key for the page's rows only (scan.checked_at).
    matching = matching.annotate(checked_at=F("poll__last_checked_at"))
    total = counts[_chip(filters.status)]
    if filters.sort == PROBLEMS_FIRST:
        rows = _problems_first(matching, filters, counts, now)
    else:
        rows = _ordered(matching, filters.sort, now)
    paginator = _CountedPaginator(rows, filters.per_page, total=min(total, MAX_LISTED))
    beyond = total if total > MAX_LISTED else 0
    return ScanListPage(page=paginator.get_page(filters.page), counts=counts, version=version, beyond_cap=beyond)


def scans_version() -> str:
    """A token that changes whenever any scan changes: cheap (one indexed MAX)."""
    latest = Scan.objects.aggregate(latest=Max("updated_at"))["latest"]
    return f"{latest.timestamp():.6f}" if latest else "0"


def scan_by_tracking_id(tracking_id: str) -> Scan | None:
    """The scan with this tracking ID, or None."""
    return Scan.objects.filter(tracking_id=tracking_id).select_related("poll").first()


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


# The 24 h figures (rate, percentiles, the hourly chart) are recomputed when a scan finishes (the finished counts
# are in the key, so they never disagree with the counts beside them) and otherwise at most this often, as the
# day's window moves on.
DAY_CACHE_SECONDS = 60


def dashboard_header_stats(*, now: datetime) -> HeaderStats:
    """Counts per status, the last 24 h of completions (rate, percentiles, per hour) and the poller's health.

    The counts are cached like the list's; the 24 h figures until a scan finishes or DAY_CACHE_SECONDS pass; the
    poller's health is read every time.
    """
    counts = _cached_counts("counts", (), lambda: tracked_status_counts(now=now), now=now)
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
