"""Alerts (an outbox: written first, then sent), who receives them, and what holds them back."""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from scans.models.refresh_run import RefreshRun
from scans.models.scan import Scan


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


class AlertSnoozeQuerySet(models.QuerySet):
    """Maintenance windows in the vocabulary of the alerts, the banner and the settings page."""

    def open(self, now: datetime) -> AlertSnoozeQuerySet:
        """Not ended by hand and not over: in force at `now` or still to come (one walk of `snooze_open_until`)."""
        return self.filter(ended_at__isnull=True, until__gt=now)

    def active(self, now: datetime) -> AlertSnoozeQuerySet:
        """In force at `now`: alerts found now are held back. Row-level twin: AlertSnooze.is_active()."""
        return self.open(now).filter(starts_at__lte=now)

    def scheduled(self, now: datetime) -> AlertSnoozeQuerySet:
        """Still to come at `now`. Row-level twin: AlertSnooze.is_scheduled()."""
        return self.open(now).filter(starts_at__gt=now)


class AlertSnooze(models.Model):
    """A maintenance window: no alert is sent from `starts_at` until `until`, unless someone ends it first."""

    starts_at = models.DateTimeField(default=timezone.now)
    until = models.DateTimeField()
    reason = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey("auth.User", null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    # Set by "End now" (or by cancelling a window that has not begun); the row stays as the record of what it held.
    ended_at = models.DateTimeField(null=True, blank=True)

    objects = AlertSnoozeQuerySet.as_manager()

    class Meta:
        ordering = ["-until"]
        # Every page's banner reads the open windows: an index on the few rows nobody ended, by their end.
        indexes = [models.Index(fields=["until"], condition=Q(ended_at__isnull=True), name="snooze_open_until")]
        constraints = [
            models.CheckConstraint(condition=Q(starts_at__lte=F("until")), name="snooze_starts_before_it_ends")
        ]

    def __str__(self) -> str:
        return f"snooze {self.starts_at:%Y-%m-%d %H:%M} to {self.until:%Y-%m-%d %H:%M}"

    def is_active(self, now: datetime) -> bool:
        """In force at `now` (the row-level twin of AlertSnooze.objects.active())."""
        return self.ended_at is None and self.until > now and self.starts_at <= now

    def is_scheduled(self, now: datetime) -> bool:
        """Still to come at `now` (the row-level twin of AlertSnooze.objects.scheduled())."""
        return self.ended_at is None and self.until > now and self.starts_at > now
