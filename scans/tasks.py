"""Celery tasks: thin wrappers that call services."""

from celery import shared_task

from scans.services import scans_refresh_due


@shared_task(acks_late=True, soft_time_limit=270, time_limit=300, ignore_result=True)
def refresh_due_scans() -> dict:
    """Poll every due, non-final scan once; safe to run twice at once (scans are claimed)."""
    run = scans_refresh_due()
    return {"run": run.pk, "outcome": run.outcome, "asked": run.ids_asked, "changed": run.changed}
