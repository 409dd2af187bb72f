"""Reads for the pages: the filtered, sorted, counted querysets (the header's figures: scans.header_stats)."""

from __future__ import annotations

import hashlib
from dataclasses import astuple, dataclass, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from django.core.cache import cache
from django.core.paginator import Page, Paginator
from django.db.models import Exists, F, FloatField, Func, Max, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.functional import cached_property

from scans.counts import scan_status_counts, search_status_counts, tracked_status_counts
from scans.models import Alert, AlertMute, Scan, StatusChange, stuck_condition
from scans.poller_health import PollerHealth, human_age, poller_health
from scans.problems import error_group_condition
from scans.search import SearchTerms, scan_search_condition, search_terms, tracked_labels

__all__ = ["PollerHealth", "human_age", "poller_health", "tracked_status_counts"]

STUCK = "STUCK"
# What the status filter accepts: a status, or STUCK (past the stuck limits, whatever the status).
STATUS_VALUES = (*Scan.Status.values, STUCK)
PER_PAGE_CHOICES = (25, 50, 100)
DEFAULT_PER_PAGE = 50
# What the status chips count, in display order: (key, label, the status filter value it sets; None: no filter).
CHIPS = (
    ("all", "All", None),
    ("new", "Not checked yet", Scan.Status.NEW),
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


# The times the range filter applies to (the URL's `time`), by the column holding each.
TIME_FIELDS = {"submitted": "submitted_at", "ended": "ended_at"}
DEFAULT_TIME_FIELD = "submitted"
# The time presets (the URL's `when`): each reaches this far back from now.
TIME_WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
CUSTOM = "custom"
# The list's time range choices, in display order.
TIME_RANGE_CHOICES = (
    ("", "Any time"),
    ("1h", "Last 1 h"),
    ("24h", "Last 24 h"),
    ("7d", "Last 7 d"),
    (CUSTOM, "Custom"),
)


@dataclass(frozen=True)
class ScanFilters:
    """What the list shows: every field comes from the query string."""

    status: str = ""
    q: str = ""
    source: str = ""
    # The time range: which time it applies to, a preset (TIME_WINDOWS, up to now) or CUSTOM whole days on the
    # viewer's clock (`zone`, an IANA name); "" is any time. Days outside CUSTOM are never set (ScanFilterForm).
    time_field: str = DEFAULT_TIME_FIELD
    when: str = ""
    day_from: date | None = None
    day_to: date | None = None
    zone: str = "UTC"
    sort: str = DEFAULT_SORT
    archived: bool = False
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE
    error: str = ""  # a Problems group: scans whose error normalises to this (scans.problems)

    @property
    def has_time_range(self) -> bool:
        """Whether a time range narrows the list (a preset, or a custom range with at least one day)."""
        return self.when in TIME_WINDOWS or bool(self.day_from or self.day_to)

    def time_bounds(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        """[start, end) the chosen time must fall in; None is an open end. A preset is the last hour/day/week
        up to `now`; custom days run from the zone's midnight to the next one (DST days are 23 or 25 h long)."""
        if self.when in TIME_WINDOWS:
            return now - TIME_WINDOWS[self.when], None
        zone = ZoneInfo(self.zone)
        # The first and last dates have no day before or after them in every zone: those ends stay open.
        start = _day_start(self.day_from, zone) if self.day_from and self.day_from > date.min else None
        end = _day_start(self.day_to + timedelta(days=1), zone) if self.day_to and self.day_to < date.max else None
        return start, end


def _day_start(day: date, zone: tzinfo = UTC) -> datetime:
    return datetime.combine(day, time.min, tzinfo=zone)


def scans_matching(
    *, filters: ScanFilters, terms: SearchTerms | None = None, now: datetime | None = None
) -> QuerySet[Scan]:
    """Scans matching every filter except the status (the chips count per status over this set).

    `terms`: the search split by _search_terms(), for its label half to be read from the label index.
    `now`: where a time preset ends (default: the current time).
    """
    qs = Scan.objects.archived() if filters.archived else Scan.objects.tracked()
    if filters.q:
        qs = qs.filter(terms.condition() if terms else scan_search_condition(filters.q))
    if filters.source:
        qs = qs.filter(data_source=filters.source)
    if filters.error:
        qs = qs.filter(error_group_condition(filters.error))
    start, end = filters.time_bounds(now or timezone.now())
    column = TIME_FIELDS[filters.time_field]
    if start:
        qs = qs.filter(**{f"{column}__gte": start})
    if end:
        qs = qs.filter(**{f"{column}__lt": end})
    return qs


# Counts are kept this long, keyed by scans_version(): any change to a scan makes a new key at once. The time
# bucket is in the key too, so the stuck count (which moves with the clock alone) and a delete (which leaves
# scans_version() alone) are at most this many seconds behind.
COUNTS_CACHE_SECONDS = 10


def cached_counts(name: str, key_parts: tuple, read, *, now: datetime, version: str | None = None):
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


def _search_terms(filters: ScanFilters, *, now: datetime, version: str) -> SearchTerms | None:
    """The search of tracked scans split in two (scans.search), the distinct labels cached like the counts;
    None without a search, in the archive, or with too many labels."""
    if not filters.q or filters.archived:
        return None
    read = lambda: {"labels": tracked_labels()}  # noqa: E731  (a dict: None is not cached)
    labels = cached_counts("labels", (), read, now=now, version=version)["labels"]
    return None if labels is None else search_terms(filters.q, labels=labels)


def scan_list_counts(
    *, filters: ScanFilters, now: datetime, version: str | None = None, terms: SearchTerms | None = None
) -> dict[str, int]:
    """The chips' counts for these filters, cached (see COUNTS_CACHE_SECONDS); `version`: scans_version().

    Without a search, source or date filter they are the header's counts: a GROUP BY over one index. With a
    search alone, its label half is counted from the label index (`terms`, see _search_terms).
    """
    narrowed = replace(filters, status="", sort=DEFAULT_SORT, page=1, per_page=DEFAULT_PER_PAGE)
    if not narrowed.has_time_range:  # "ended" or "custom" alone narrow nothing: count them as the plain list
        narrowed = replace(narrowed, time_field=DEFAULT_TIME_FIELD, when="", zone="UTC")
    if narrowed == ScanFilters():
        return cached_counts("counts", (), lambda: tracked_status_counts(now=now), now=now, version=version)
    if terms and narrowed == ScanFilters(q=filters.q):
        read = lambda: search_status_counts(terms=terms, now=now)  # noqa: E731
    else:
        matching = scans_matching(filters=filters, terms=terms, now=now)
        read = lambda: scan_status_counts(matching, now=now)  # noqa: E731
    return cached_counts("counts", astuple(narrowed), read, now=now, version=version)


def scan_list_for_dashboard(*, filters: ScanFilters, now: datetime) -> ScanListPage:
    """One page of the list (at most MAX_LISTED rows deep), the per-status counts, and the version they show."""
    version = scans_version()
    terms = _search_terms(filters, now=now, version=version)
    counts = scan_list_counts(filters=filters, now=now, version=version, terms=terms)
    matching = _with_status(scans_matching(filters=filters, terms=terms, now=now), filters.status, now)
    matching = matching.only(*LIST_COLUMNS)
    # The poll row's last check, joined by primary key for the page's rows only (scan.checked_at), and the
    # muted markers, two index lookups per row of the page inside the same query.
    matching = matching.annotate(checked_at=F("poll__last_checked_at"), **mute_flags())
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
    """The scan with this tracking ID (with its muted markers, see mute_flags()), or None."""
    return Scan.objects.filter(tracking_id=tracking_id).select_related("poll").annotate(**mute_flags()).first()


def mute_flags() -> dict[str, Exists]:
    """Annotations for a scan queryset: `muted_scan` (the scan is muted) and `muted_label` (its label is).

    The same two mutes alert detection honours (scans.alert_detection.Suppression); each is one lookup in a
    unique index of AlertMute, so a page of rows costs no query of its own.
    """
    return {
        "muted_scan": Exists(AlertMute.objects.filter(scan=OuterRef("pk"))),
        "muted_label": Exists(AlertMute.objects.filter(label=OuterRef("label")).exclude(label="")),
    }


DATA_SOURCES_CACHE_SECONDS = 60


def data_sources() -> list[str]:
    """Every data source seen, for the filter's choices; cached a minute (a DISTINCT over every scan is slow)."""

    def read() -> list[str]:
        named = Scan.objects.exclude(data_source="").order_by("data_source")
        return list(named.values_list("data_source", flat=True).distinct())

    return cache.get_or_set("scans:data-sources", read, DATA_SOURCES_CACHE_SECONDS)


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
