"""Triage records: an operator's acknowledgement of a problem scan, and the audit log of every operator action."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from scans.models.scan import TRACKING_ID_MAX_LENGTH, Scan

NOTE_MAX_LENGTH = 200


class Acknowledgement(models.Model):
    """ "Seen, being dealt with": a failed or stuck scan an operator acknowledged, with a note ("ticket OPS-123").

    One per scan: acknowledging again replaces the note. It holds while the scan has not changed since
    (acknowledgement_holds()); a scan that fails or gets stuck again after it is a problem again.
    """

    scan = models.OneToOneField(Scan, on_delete=models.CASCADE, related_name="acknowledgement")
    note = models.CharField(max_length=NOTE_MAX_LENGTH, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    # Kept as text too, so the mark still names who acknowledged after the account is deleted.
    username = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.scan_id} acknowledged by {self.username}"

    def holds_for(self, scan: Scan) -> bool:
        """The row-level twin of acknowledgement_holds(): the scan has not changed status since."""
        return scan.last_changed_at is None or scan.last_changed_at <= self.created_at


def acknowledgement_holds() -> Q:
    """True for a scan acknowledged after its last status change: it leaves the Problems view and the count.

    Our own clock on both sides (last_changed_at is when a refresh saw the change), never the API's times.
    Each branch is one probe of the acknowledgement's unique scan index. Its row-level twin is
    Acknowledgement.holds_for(); change both together.
    """
    acknowledged = Acknowledgement.objects.filter(scan=OuterRef("pk"))
    newer = acknowledged.filter(created_at__gte=OuterRef("last_changed_at"))
    return Q(Exists(newer)) | Q(last_changed_at__isnull=True, pk__in=Acknowledgement.objects.values("scan"))


class AuditEntry(models.Model):
    """One operator action: who, when, what (the action, its scan or label, details)."""

    class Action(models.TextChoices):
        ADD = "add", "Add"
        ARCHIVE = "archive", "Archive"
        RESTORE = "restore", "Restore"
        LABEL = "label", "Label"
        REFRESH = "refresh", "Refresh"
        MUTE = "mute", "Mute"
        UNMUTE = "unmute", "Unmute"
        SNOOZE = "snooze", "Snooze"
        END_SNOOZE = "end_snooze", "End snooze"
        ACKNOWLEDGE = "acknowledge", "Acknowledge"

    created_at = models.DateTimeField(default=timezone.now)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    # Who did it, as text: the account's name (kept after it is deleted), or the command ("manage.py").
    username = models.CharField(max_length=150)
    action = models.CharField(max_length=16, choices=Action.choices)
    scan = models.ForeignKey(Scan, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_entries")
    # A copy of the scan's ID: the entry still names it after the scan is deleted.
    tracking_id = models.CharField(max_length=TRACKING_ID_MAX_LENGTH, blank=True)
    detail = models.CharField(max_length=500, blank=True)

    class Meta:
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["created_at"], name="audit_created"),  # date presets and retention, by age
            models.Index(fields=["scan", "-id"], name="audit_scan"),  # a scan's timeline
            models.Index(fields=["tracking_id", "-id"], name="audit_tracking_id"),
            models.Index(fields=["action", "-id"], name="audit_action"),
            models.Index(fields=["username", "-id"], name="audit_username"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.username} {self.action} {self.tracking_id}"
