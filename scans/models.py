"""Scans tracked by ops staff, the transitions observed on each, and the poller's own runs."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

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

    def due(self, now: datetime) -> ScanQuerySet:
        """Active scans whose next check has come.

        A scan checked one interval ago is due at this tick even if the tick fires a moment early: without the
        grace, beat's jitter would skip it to the tick after and double its check interval.
        """
        grace = timedelta(seconds=min(5.0, settings.REFRESH_INTERVAL_SECONDS / 5))
        return self.active().filter(next_check_at__lte=now + grace)

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
        self.bulk_update(scans, [*fields, "updated_at"], batch_size=1000)


class Scan(models.Model):
    """One Protecto data scan, known by the tracking ID the Data Scan Async API returned."""

    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending"
        IN_PROGRESS = "IN-PROGRESS", "In progress"
        SUCCESS = "SUCCESS", "Succeeded"
        FAILED = "FAILED", "Failed"
        UNKNOWN = "UNKNOWN", "Unknown"
        # Not reported by the API for NOT_FOUND_AFTER_HOURS: still polled, with backoff, in case it appears.
        NOT_FOUND = "NOT-FOUND", "Not found"

    TERMINAL = (Status.SUCCESS, Status.FAILED)
    ACTIVE = (Status.PENDING, Status.IN_PROGRESS, Status.UNKNOWN, Status.NOT_FOUND)
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
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UNKNOWN)
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
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_changed_at = models.DateTimeField(null=True, blank=True)
    # Null means "never poll again": the scan is final or archived.
    next_check_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    last_check_error = models.TextField(blank=True)
    check_failures = models.PositiveIntegerField(default=0)
    # When an answer last listed this ID; an ID unreported for NOT_FOUND_AFTER_HOURS becomes NOT FOUND.
    last_reported_at = models.DateTimeField(null=True, blank=True)
    # Why an answer was not applied as sent (a step backwards, a duplicate, a value the database can't hold, an
    # error it cleared), time-stamped by scans/judgement.py; kept until a later answer brings a warning of its own.
    answer_warning = models.TextField(blank=True)
    # Set by the refresh that claimed this scan, so only that refresh writes the answer back.
    claim_token = models.CharField(max_length=32, blank=True, editable=False)
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
            models.Index(fields=["next_check_at"], name="scan_due", condition=Q(next_check_at__isnull=False)),
            models.Index(fields=["claim_token"], name="scan_claim", condition=~Q(claim_token="")),
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


class RefreshRunQuerySet(models.QuerySet):
    """The vocabulary for the poller's runs."""

    def running(self) -> RefreshRunQuerySet:
        """Runs not finished: live, or left behind by a worker that died."""
        return self.filter(outcome=RefreshRun.Outcome.RUNNING)

    def without_progress_since(self, cutoff: datetime) -> RefreshRunQuerySet:
        """Runs whose last sign of life (their last batch, else their start) is older than `cutoff`."""
        return self.alias(progress=Coalesce("last_progress_at", "started_at")).filter(progress__lt=cutoff)


class RefreshRun(models.Model):
    """One refresh cycle: the poller's own health record."""

    class Outcome(models.TextChoices):
        RUNNING = "running", "Running"
        IDLE = "idle", "Nothing due"
        OK = "ok", "OK"
        PARTIAL = "partial", "Some batches failed"
        DEGRADED = "degraded", "Answers incomplete"
        FAILED = "failed", "API failing"
        AUTH_REFUSED = "auth_refused", "Token refused"
        ABANDONED = "abandoned", "Worker died"

    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    ids_asked = models.PositiveIntegerField(default=0)
    ids_answered = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(default=0)
    api_calls = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0, help_text="Batches that failed.")
    write_failures = models.PositiveIntegerField(default=0, help_text="Scans whose answer could not be written.")
    # Added up by each batch task, so the last one closes the run with the same outcome an in-process run gets.
    batches_ok = models.PositiveIntegerField(default=0, help_text="Batches whose answer was written.")
    ids_expected = models.PositiveIntegerField(default=0, help_text="IDs to be reported (not yet NOT FOUND).")
    # Bumped after every batch, so a long cycle that is still making progress is not taken for a dead poller.
    last_progress_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    error_text = models.TextField(blank=True)

    objects = RefreshRunQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at", "-pk"]
        indexes = [models.Index(fields=["-started_at"], name="run_started")]

    def __str__(self) -> str:
        return f"refresh {self.started_at:%Y-%m-%d %H:%M:%S} {self.outcome}"


class Alert(models.Model):
    """One alert, written before any send (an outbox row); the send records its outcome on it."""

    class Kind(models.TextChoices):
        FAILED = "failed", "Scan failed"
        STUCK = "stuck", "Scan stuck"
        STUCK_RESOLVED = "stuck_resolved", "Stuck scan finished"
        API_AUTH = "api_auth", "API refused the token"
        API_DOWN = "api_down", "API down"
        API_RECOVERED = "api_recovered", "API recovered"
        NOT_FOUND = "not_found", "Unknown to Protecto"
        POLLER_STALE = "poller_stale", "Refresh stopped"
        POLLER_RECOVERED = "poller_recovered", "Refresh resumed"

    class State(models.TextChoices):
        PENDING = "pending", "Waiting to send"
        SENT = "sent", "Sent"
        IN_DIGEST = "in_digest", "Sent in a digest"
        SUPPRESSED = "suppressed", "Suppressed"
        NO_RECIPIENTS = "no_recipients", "No recipients"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    # What the alert is about (its identity, with kind and snooze): a scan, or the API outage that began with
    # `outage`, its first failing refresh. The unique constraints below make a second detection a no-op.
    scan = models.ForeignKey(Scan, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts")
    # PROTECT, not CASCADE: refresh-run retention skips runs an alert names, so nothing routine deletes one; a
    # hand-made delete must not silently erase the outbox's history. Not SET_NULL: an API alert without its outage
    # could be neither deduplicated nor followed by a recovery notice.
    outage = models.ForeignKey(
        RefreshRun, null=True, blank=True, on_delete=models.PROTECT, related_name="outage_alerts"
    )
    # The snooze that held this alert back. A persisting condition (stuck, API down) is alerted again once that
    # snooze is over, so the snooze is part of the identity. PROTECT: deleting the snooze would erase the record
    # of what it suppressed, and SET_NULL would turn a held-back alert into one that blocks the alert after the
    # snooze. Snoozes end by setting ended_at, never by deletion.
    snooze = models.ForeignKey(
        "AlertSnooze", null=True, blank=True, on_delete=models.PROTECT, related_name="held_alerts"
    )
    is_digest = models.BooleanField(default=False)
    digest = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="members",
        limit_choices_to={"is_digest": True},
    )
    recipients = models.JSONField(default=list)
    subject = models.CharField(max_length=250)
    body_text = models.TextField()
    body_html = models.TextField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    suppressed_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    # Set by the sender that claimed this alert, so two senders never mail it both.
    claim_token = models.CharField(max_length=32, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["next_attempt_at"], name="alert_due", condition=Q(state="pending")),
            models.Index(fields=["kind", "-created_at"], name="alert_kind_created"),
            models.Index(fields=["state", "-created_at"], name="alert_state_created"),
        ]
        # NULLs are distinct in a unique index (PostgreSQL and SQLite alike), so "not held by a snooze" needs a
        # constraint of its own. bulk_create(ignore_conflicts=True) honours these partial indexes on both.
        constraints = [
            models.UniqueConstraint(
                fields=["scan", "kind"],
                condition=Q(is_digest=False, scan__isnull=False, snooze__isnull=True),
                name="alert_one_per_scan_kind",
            ),
            models.UniqueConstraint(
                fields=["scan", "kind", "snooze"],
                condition=Q(is_digest=False, scan__isnull=False, snooze__isnull=False),
                name="alert_one_per_scan_kind_snooze",
            ),
            models.UniqueConstraint(
                fields=["kind", "outage"],
                condition=Q(is_digest=False, outage__isnull=False, snooze__isnull=True),
                name="alert_one_per_outage_kind",
            ),
            models.UniqueConstraint(
                fields=["kind", "outage", "snooze"],
                condition=Q(is_digest=False, outage__isnull=False, snooze__isnull=False),
                name="alert_one_per_outage_kind_snooze",
            ),
        ]

    def __str__(self) -> str:
        return self.subject


class AlertSubscription(models.Model):
    """Which kinds of alert a user wants, and where."""

    user = models.OneToOneField("auth.User", on_delete=models.CASCADE, related_name="alert_subscription")
    email = models.EmailField(blank=True, help_text="Blank: the user's own email address.")
    kinds = models.JSONField(default=list, help_text="Alert kinds to receive.")

    def __str__(self) -> str:
        return f"{self.user} <{self.address}>"

    @property
    def address(self) -> str:
        return self.email or self.user.email


class AlertMute(models.Model):
    """No alerts about one scan, or about every scan with a label."""

    scan = models.ForeignKey(Scan, null=True, blank=True, on_delete=models.CASCADE, related_name="mutes")
    label = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey("auth.User", null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(scan__isnull=False) & Q(label="")) | (Q(scan__isnull=True) & ~Q(label="")),
                name="mute_scan_xor_label",
            ),
            models.UniqueConstraint(fields=["scan"], condition=Q(scan__isnull=False), name="mute_one_per_scan"),
            models.UniqueConstraint(fields=["label"], condition=~Q(label=""), name="mute_one_per_label"),
        ]

    def __str__(self) -> str:
        return f"mute {self.scan or repr(self.label)}"


class AlertSnooze(models.Model):
    """A maintenance window: no alert is sent before `until`."""

    until = models.DateTimeField()
    reason = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey("auth.User", null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-until"]

    def __str__(self) -> str:
        return f"snooze until {self.until:%Y-%m-%d %H:%M}"


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
