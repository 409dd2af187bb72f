"""Reads for the Problems view: failed and stuck scans not acknowledged, grouped by their normalised error.

Grouping never loads the failed scans themselves: the database groups them by (error text, label), which gives
one row per distinct text and label however many scans share it, and only those rows are normalised here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Max, Min, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils.http import urlencode

from scans.models import Acknowledgement, Scan, acknowledgement_holds, stuck_condition

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
WINDOW_CHOICES = (("1h", "Last hour"), ("24h", "Last 24 h"), ("7d", "Last 7 days"))
DEFAULT_WINDOW = "24h"
STUCK_PENDING = "stuck:pending"
STUCK_RUNNING = "stuck:running"
STUCK_TITLES = {STUCK_PENDING: "Stuck: pending too long", STUCK_RUNNING: "Stuck: running too long"}
LABELS_SHOWN = 5
SIGNATURE_MAX_LENGTH = 300
NO_MESSAGE = "(no error message)"
# At most this many (error text, label) rows are grouped: past it (a flood of errors each naming its own object
# in a way the masks miss) the rarest texts are left out and the page says so.
MAX_TEXT_ROWS = 20_000

# Masks, applied in this order: a quoted string may hold a path or a number, a path may hold an ID.
_MASKS = (
    (re.compile(r"'[^'\n]*'|\"[^\"\n]*\""), "<str>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}[0-9]*\b", re.I), "<id>"),
    (re.compile(r"[^\s'\"<>]*/[^\s'\"<>]*[^\s'\"<>.,;:)]"), "<path>"),
    (re.compile(r"\b(?:0x)?(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{6,}\b", re.I), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
)


def error_signature(message: str) -> str:
    """The error's first line with what differs between occurrences masked: the key failures are grouped by.

    UUIDs and hex IDs, numbers, quoted strings and paths become <id>, <hex>, <n>, <str> and <path>:
    "Permission denied reading object HR/2026/payroll.csv" -> "Permission denied reading object <path>".
    """
    stripped = message.strip()
    first = stripped.splitlines()[0].strip() if stripped else ""
    for pattern, mask in _MASKS:
        first = pattern.sub(mask, first)
    return first[:SIGNATURE_MAX_LENGTH] or NO_MESSAGE


def _failed_at():
    # When it failed: the API's end time, else when a refresh saw it fail (as alert detection judges "new").
    return Coalesce("ended_at", "last_changed_at")


def _failed_windows(since: datetime) -> list[Q]:
    # Two disjoint halves, each read from its own index (ended_at; last_changed_at): an OR of both is read as a
    # scan of every failed scan on SQLite.
    return [Q(ended_at__gte=since), Q(ended_at__isnull=True, last_changed_at__gte=since)]


def _failed_parts(since: datetime) -> list[QuerySet[Scan]]:
    failed = Scan.objects.tracked().filter(status=Scan.Status.FAILED)
    return [failed.filter(window).exclude(acknowledgement_holds()) for window in _failed_windows(since)]


def _stuck_parts(now: datetime) -> list[QuerySet[Scan]]:
    # The model's stuck rule, each (disjoint) half from its own partial index, as scans.counts counts it.
    return [
        Scan.objects.tracked().filter(half).exclude(acknowledgement_holds())
        for half in stuck_condition(now).children
    ]


def failed_problems(*, since: datetime) -> QuerySet[Scan]:
    """Tracked scans that failed since `since` and are not acknowledged (since their last change)."""
    window = Q(ended_at__gte=since) | Q(ended_at__isnull=True, last_changed_at__gte=since)
    failed = Scan.objects.tracked().filter(window, status=Scan.Status.FAILED)
    return failed.exclude(acknowledgement_holds())


def stuck_problems(*, now: datetime, key: str | None = None) -> QuerySet[Scan]:
    """Tracked scans stuck now (the model's stuck rule) and not acknowledged; `key` picks pending or running."""
    stuck = Scan.objects.tracked().stuck(now).exclude(acknowledgement_holds())
    if key == STUCK_PENDING:
        return stuck.filter(status=Scan.Status.PENDING)
    if key == STUCK_RUNNING:
        return stuck.filter(status=Scan.Status.IN_PROGRESS)
    return stuck


@dataclass
class ProblemGroup:
    """Failed scans sharing a normalised error, or the scans stuck one way; counts are of unacknowledged scans."""

    key: str
    title: str
    count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    label_counts: dict[str, int] = field(default_factory=dict)

    @property
    def is_stuck(self) -> bool:
        return self.key in STUCK_TITLES

    @property
    def list_query(self) -> str:
        """The list's query string for this group's scans: failed with the error (any time), or stuck."""
        if self.is_stuck:
            return urlencode({"status": "STUCK"})
        return urlencode({"status": Scan.Status.FAILED, "error": self.key})

    @property
    def labels(self) -> list[str]:
        """The labels affected, most affected first, unlabelled ones as ""."""
        return sorted(self.label_counts, key=lambda label: (-self.label_counts[label], label))

    @property
    def labels_shown(self) -> list[str]:
        return self.labels[:LABELS_SHOWN]

    @property
    def labels_more(self) -> int:
        return max(len(self.label_counts) - LABELS_SHOWN, 0)

    def add(self, *, count: int, label: str, first: datetime | None, last: datetime | None) -> None:
        """Fold one database row (a text or status, and a label) into the group."""
        self.count += count
        self.label_counts[label] = self.label_counts.get(label, 0) + count
        if first and (self.first_seen is None or first < self.first_seen):
            self.first_seen = first
        if last and (self.last_seen is None or last > self.last_seen):
            self.last_seen = last


@dataclass
class ProblemReport:
    """The Problems view: its groups, biggest first (stuck ones first), and whether rare texts were left out."""

    groups: list[ProblemGroup]
    since: datetime
    truncated: bool = False

    @property
    def total(self) -> int:
        return sum(group.count for group in self.groups)


def problem_report(*, since: datetime, now: datetime) -> ProblemReport:
    """Unacknowledged stuck scans (now) and failures since `since`, grouped: the Problems view's one read."""
    groups = _stuck_groups(now=now)
    failed = _failed_groups(since=since)
    truncated = sum(len(group.label_counts) for group in failed) >= MAX_TEXT_ROWS
    return ProblemReport(groups=groups + failed, since=since, truncated=truncated)


def _stuck_groups(*, now: datetime) -> list[ProblemGroup]:
    # Since when each waits: submitted (pending) or started (running), the times the stuck rule judges.
    since = Coalesce("started_at", "submitted_at")
    rows = [
        row
        for part in _stuck_parts(now)
        for row in part.values("status", "label")
        .annotate(n=Count("pk"), first=Min(since), last=Max(since))
        .order_by()
    ]
    groups = {key: ProblemGroup(key=key, title=title) for key, title in STUCK_TITLES.items()}
    for row in rows:
        key = STUCK_PENDING if row["status"] == Scan.Status.PENDING else STUCK_RUNNING
        groups[key].add(count=row["n"], label=row["label"], first=row["first"], last=row["last"])
    return [group for group in groups.values() if group.count]


def _failed_groups(*, since: datetime) -> list[ProblemGroup]:
    rows = [
        row
        for part in _failed_parts(since)
        for row in part.values("error_message", "label")
        .annotate(n=Count("pk"), first=Min(_failed_at()), last=Max(_failed_at()))
        .order_by("-n")[:MAX_TEXT_ROWS]
    ]
    groups: dict[str, ProblemGroup] = {}
    signatures: dict[str, str] = {}  # each distinct text is normalised once, whatever its number of labels
    for row in rows:
        text = row["error_message"]
        signature = signatures.get(text) or signatures.setdefault(text, error_signature(text))
        group = groups.get(signature) or groups.setdefault(signature, ProblemGroup(key=signature, title=signature))
        group.add(count=row["n"], label=row["label"], first=row["first"], last=row["last"])
    return sorted(groups.values(), key=lambda group: (-group.count, group.title))


def problem_group_scans(*, key: str, since: datetime, now: datetime) -> QuerySet[Scan]:
    """The unacknowledged scans of one group as the Problems view counts them (what acknowledging it covers)."""
    if key in STUCK_TITLES:
        return stuck_problems(now=now, key=key)
    failed = failed_problems(since=since)
    return failed.filter(error_message__in=_texts_with_signature(failed, key))


def error_group_condition(signature: str) -> Q:
    """The list's error filter: scans whose error normalises to `signature` (a failure group's "show" link).

    The texts are found among the failed scans' distinct texts that contain the signature's longest unmasked
    part, then checked one by one with error_signature(): exact, and one index-free pass over failed scans only.
    """
    failed = Scan.objects.filter(status=Scan.Status.FAILED)
    return Q(error_message__in=_texts_with_signature(failed, signature))


def _texts_with_signature(scans: QuerySet[Scan], signature: str) -> list[str]:
    literal = "" if signature == NO_MESSAGE else max(re.split(r"<(?:str|id|path|hex|n)>", signature), key=len)
    candidates = scans.filter(error_message__contains=literal.strip()) if literal.strip() else scans
    texts = candidates.order_by().values_list("error_message", flat=True).distinct()[:MAX_TEXT_ROWS]
    return [text for text in texts if error_signature(text) == signature]


def problems_open_count(*, now: datetime) -> int:
    """Unacknowledged failures of the last 24 h and stuck scans: the red count in the main navigation."""
    parts = _failed_parts(now - WINDOWS[DEFAULT_WINDOW]) + _stuck_parts(now)
    return sum(part.count() for part in parts)


def scan_acknowledgement(*, scan: Scan) -> Acknowledgement | None:
    """The scan's acknowledgement, if it has one (its page says whether it still holds)."""
    return Acknowledgement.objects.filter(scan=scan).first()
