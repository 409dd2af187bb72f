"""The poller's own runs: one RefreshRun per refresh cycle, its health record."""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models.functions import Coalesce
from django.utils import timezone


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
