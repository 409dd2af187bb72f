"""Scans tracked by ops staff, their poll bookkeeping, the transitions observed on each, and their tally."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from scans.models.bulk import update_each

TRACKING_ID_MAX_LENGTH = 128
# Protecto's IDs are UUIDs (2024) or UUID-plus-digits (2025); the contract only promises this alphabet.
TRACKING_ID_ALPHABET = "A-Za-z0-9_-"
_TRACKING_ID_CHAR = re.compile(f"[{TRACKING_ID_ALPHABET}]")


def tracking_id_problem(value: str) -> str | None:
    """Say why a value is not a tracking ID, or None when it is: the one check every entry point uses.

    It also keeps NUL out of queries, which PostgreSQL refuses in any text parameter.
    """
    if not value:
        return "is empty"
    if len(value) > TRACKING_ID_MAX_LENGTH:
        return f"is {len(value)} characters long; the limit is {TRACKING_ID_MAX_LENGTH}"
    bad = sorted({char for char in value if not _TRACKING_ID_CHAR.fullmatch(char)})
    if bad:
        shown = ", ".join(repr(char) for char in bad[:5])
        return f"contains {shown}; only letters, digits, '-' and '_' are allowed"
    return None


def validate_tracking_id(value: str) -> None:
    """Django validator form of tracking_id_problem()."""
    problem = tracking_id_problem(value)
    if problem:
        raise ValidationError(f"A tracking ID {problem}.", code="invalid_tracking_id")


def stuck_limits() -> tuple[timedelta, timedelta]:
    """How long a scan may stay PENDING (since submission) and IN-PROGRESS (since its start) before it is stuck."""
    return timedelta(minutes=settings.STUCK_PENDING_MINUTES), timedelta(minutes=settings.STUCK_RUNNING_MINUTES)


def stuck_condition(now: datetime) -> Q:
    """The stuck rule in SQL: waiting or running longer than the limits, by the API's own timestamps.

    Its row-level twin is Scan.is_stuck(); change both together.
    """
    pending_limit, running_limit = stuck_limits()
    return Q(status=Scan.Status.PENDING, submitted_at__lt=now - pending_limit) | Q(
        status=Scan.Status.IN_PROGRESS, started_at__lt=now - running_limit
    )


def due_cutoff(now: datetime) -> datetime:
    """A scan whose next check is at or before this is due at `now`.

    A scan checked one interval ago is due at this tick even if the tick fires a moment early: without the grace,
    beat's jitter would skip it to the tick after and double its check interval.
    """
    return now + timedelta(seconds=min(5.0, settings.REFRESH_INTERVAL_SECONDS / 5))


class ScanQuerySet(models.QuerySet):
    """The domain's vocabulary for sets of scans: every layer asks these instead of spelling the filters."""

    def tracked(self) -> ScanQuerySet:
        """Not archived: shown by default and, unless final, polled."""
        return self.filter(archived_at__isnull=True)

    def archived(self) -> ScanQuerySet:
        """Archived: out of the default list and never polled."""
        return self.filter(archived_at__isnull=False)

    def active(self) -> ScanQuerySet:
        """Tracked and not final: the scans a refresh still polls."""
        return self.tracked().filter(status__in=Scan.ACTIVE)

    def finished(self) -> ScanQuerySet:
        """SUCCESS or FAILED: never polled again."""
        return self.filter(status__in=Scan.TERMINAL)

    def stuck(self, now: datetime) -> ScanQuerySet:
        """Scans past the stuck limits (see stuck_condition)."""
        return self.filter(stuck_condition(now))

    def write(self, **changes) -> int:
        """Update the rows and bump updated_at, which tells open pages that something changed; return the count.

        Every change a user may see goes through here (or through Scan.objects.write_each for per-row values).
        """
        return self.update(updated_at=timezone.now(), **changes)


class ScanManager(models.Manager.from_queryset(ScanQuerySet)):
    """Scan.objects: the queryset vocabulary, plus the bulk write that bumps updated_at."""

    def write_each(self, scans: list[Scan], fields: list[str]) -> None:
        """Save per-row values of `fields` for many scans in few queries, bumping updated_at like write()."""
        stamp = timezone.now()
        for scan in scans:
            scan.updated_at = stamp
        update_each(scans, [*fields, "updated_at"])


class Scan(models.Model):
    """One Protecto data scan, known by the tracking ID the Data Scan Async API returned."""

    class Status(models.TextChoices):
        # Tracked, and no answer has named it yet: not the same as UNKNOWN, which is a status the API sent that we
        # do not recognise. The first answer that lists the ID moves it on (scans/judgement.py).
        NEW = "NEW", "Not checked yet"
        PENDING = "PENDING", "Pending"
        IN_PROGRESS = "IN-PROGRESS", "In progress"
        SUCCESS = "SUCCESS", "Succeeded"
        FAILED = "FAILED", "Failed"
        UNKNOWN = "UNKNOWN", "Unknown"
        # Not reported by the API for NOT_FOUND_AFTER_HOURS: still polled, with backoff, in case it appears.
        NOT_FOUND = "NOT-FOUND", "Not found"

    TERMINAL = (Status.SUCCESS, Status.FAILED)
    ACTIVE = (Status.NEW, Status.PENDING, Status.IN_PROGRESS, Status.UNKNOWN, Status.NOT_FOUND)
    # What Protecto's answers set; a refresh writes these and nothing else of the scan's own data.
    ANSWER_FIELDS = (
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

    tracking_id = models.CharField(
        max_length=TRACKING_ID_MAX_LENGTH,
        unique=True,
        validators=[validate_tracking_id],
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    raw_status = models.CharField(
        max_length=64, blank=True, help_text="The status text exactly as the API sent it."
    )
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    label = models.CharField(max_length=200, blank=True)
    data_source = models.CharField(max_length=200, blank=True)
    object_path = models.CharField(max_length=500, blank=True)
    last_raw_answer = models.JSONField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now, help_text="When tracking began.")
    last_changed_at = models.DateTimeField(null=True, blank=True)
    # The poll's own bookkeeping (next check, claim, last checked, last reported) is in ScanPoll, so that a poll
    # that changes nothing never rewrites this wide row. Errors and failure counts stay here: they are shown.
    last_check_error = models.TextField(blank=True)
    check_failures = models.PositiveIntegerField(default=0)
    # Why an answer was not applied as sent (a step backwards, a duplicate, a value the database can't hold, an
    # error it cleared), time-stamped by scans/judgement.py; kept until a later answer brings a warning of its own.
    answer_warning = models.TextField(blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    # Bumped by every write (ScanQuerySet.write); its maximum tells a polling page whether anything changed.
    updated_at = models.DateTimeField(default=timezone.now)

    objects = ScanManager()

    # No default ordering: every list states its own, so no query pays for a sort it did not ask for.
    class Meta:
        permissions = [("operate_scans", "Can add, refresh, label and archive scans")]
        indexes = [
            models.Index(fields=["updated_at"], name="scan_updated"),
            models.Index(fields=["data_source"], name="scan_source"),
            # A status chip in the list's default order, and the failed part of "failed & stuck first".
            models.Index(
                F("status"),
                Coalesce("submitted_at", "created_at"),
                F("id"),
                name="scan_status_order",
                condition=Q(archived_at__isnull=True),
            ),
            # Covers the header's counts per status and its stuck count without reading the table.
            models.Index(
                fields=["status", "submitted_at", "started_at"],
                name="scan_tracked_status",
                condition=Q(archived_at__isnull=True),
            ),
            # The stuck count's two halves (counted apart: an OR of both is read as a scan on both databases).
            models.Index(
                fields=["submitted_at"],
                name="scan_pending_since",
                condition=Q(status="PENDING", archived_at__isnull=True),
            ),
            models.Index(
                fields=["started_at"],
                name="scan_running_since",
                condition=Q(status="IN-PROGRESS", archived_at__isnull=True),
            ),
            # No index of our own on tracking_id: unique=True gives one, and on PostgreSQL Django adds its
            # varchar_pattern_ops twin for LIKE 'abc%'. Substring search has its own (scans/search.py).
            models.Index(fields=["-last_changed_at"], name="scan_last_changed"),
            models.Index(fields=["-created_at"], name="scan_created"),
            # The list's default order (newest submitted first, tracking start when unsubmitted) without a sort
            # of every row, and the header's "finished in the last 24 h" without a scan of every finished one.
            models.Index(Coalesce("submitted_at", "created_at"), F("id"), name="scan_submitted_or_created"),
            # With status and started_at in it, the header's 24 h figures read this index alone.
            models.Index(fields=["ended_at", "status", "started_at"], name="scan_ended_covering"),
            # The distinct labels of tracked scans, one probe each, and per-status counts of the scans with some
            # labels, from this index alone (scans/search.py).
            models.Index(
                fields=["label", "status"], name="scan_tracked_label", condition=Q(archived_at__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return self.tracking_id

    @property
    def is_final(self) -> bool:
        """SUCCESS or FAILED: the scan will not change again."""
        return self.status in self.TERMINAL

    def is_stuck(self, now: datetime) -> bool:
        """The stuck rule for one scan in memory: the row-level twin of stuck_condition()."""
        pending_limit, running_limit = stuck_limits()
        if self.status == self.Status.PENDING and self.submitted_at:
            return now - self.submitted_at > pending_limit
        if self.status == self.Status.IN_PROGRESS and self.started_at:
            return now - self.started_at > running_limit
        return False

    @property
    def queue_wait(self) -> timedelta | None:
        """Time between submission and the start of processing."""
        return _between(self.submitted_at, self.started_at)

    @property
    def run_time(self) -> timedelta | None:
        """Time the scan spent processing."""
        return _between(self.started_at, self.ended_at)

    @property
    def total_time(self) -> timedelta | None:
        """Time from submission to the end."""
        return _between(self.submitted_at, self.ended_at)

    @property
    def error_summary(self) -> str:
        """The first line of the error message, for tables."""
        return self.error_message.strip().splitlines()[0] if self.error_message.strip() else ""


def _between(start, end) -> timedelta | None:
    if start is None or end is None:
        return None
    return max(end - start, timedelta(0))


class ScanPollQuerySet(models.QuerySet):
    """The vocabulary for poll rows."""

    def due(self, now: datetime) -> ScanPollQuerySet:
        """Rows whose next check has come (see due_cutoff): read from the poll_due index alone.

        A final or archived scan's row has no next check (the refresh, archiving and the insert trigger see to
        it), so this needs no look at the scans table; should a final scan slip in, its poll writes it back with
        no next check.
        """
        return self.filter(next_check_at__lte=due_cutoff(now))


class ScanPoll(models.Model):
    """A scan's poll bookkeeping, in a narrow table of its own: one row per scan.

    Every poll writes these (a claim, then the answer's check time), most polls nothing else: kept apart, an
    unchanged poll rewrites a row of a few dozen bytes with three small indexes, not the wide scan row with its
    dozen indexes and its answer. A database trigger (migration 0013) inserts the row with its scan, however the
    scan is inserted, so no scan can exist unpolled.
    """

    scan = models.OneToOneField(Scan, primary_key=True, on_delete=models.CASCADE, related_name="poll")
    # Null means "never poll again": the scan is final or archived.
    next_check_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    # Set by the refresh that claimed this scan, so only that refresh writes the answer back.
    claim_token = models.CharField(max_length=32, blank=True, editable=False)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    # When an answer last listed this ID; an ID unreported for NOT_FOUND_AFTER_HOURS becomes NOT FOUND.
    last_reported_at = models.DateTimeField(null=True, blank=True)

    objects = ScanPollQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["next_check_at"], name="poll_due", condition=Q(next_check_at__isnull=False)),
            models.Index(fields=["claim_token"], name="poll_claim", condition=~Q(claim_token="")),
        ]

    def __str__(self) -> str:
        return f"poll of scan {self.scan_id}"


class StatusChange(models.Model):
    """One observed transition of a scan's status: a step of its timeline."""

    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="changes")
    from_status = models.CharField(max_length=16, choices=Scan.Status.choices)
    to_status = models.CharField(max_length=16, choices=Scan.Status.choices)
    raw_status = models.CharField(max_length=64, blank=True)
    observed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["observed_at", "pk"]
        indexes = [
            models.Index(fields=["scan", "observed_at"], name="change_scan_time"),
            models.Index(fields=["observed_at"], name="change_observed"),  # retention's batches, by age
            models.Index(fields=["to_status", "-observed_at"], name="change_status_time"),
        ]

    def __str__(self) -> str:
        return f"{self.scan_id}: {self.from_status} -> {self.to_status}"


class ScanStatusTally(models.Model):
    """How many scans are in each (status, tracked) pair, as +1/-1 rows summed on read.

    Written only by database triggers on scans_scan (migration 0011): a scan inserted, deleted, or changing status
    or archived-ness appends rows; nothing ever updates one, so concurrent refreshes never wait on a counter row.
    scans.counts folds the rows into one per pair when they pile up.
    """

    status = models.CharField(max_length=16)
    tracked = models.BooleanField()
    delta = models.IntegerField()

    def __str__(self) -> str:
        return f"{self.status} {'tracked' if self.tracked else 'archived'} {self.delta:+d}"
