"""Celery tasks: thin wrappers that call services."""

from celery import shared_task

from scans.alerts import alerts_run
from scans.refresh import scans_refresh_due
from scans.services import request_alert_send


@shared_task(acks_late=True, soft_time_limit=270, time_limit=300, ignore_result=True)
def refresh_due_scans() -> dict:
    """Poll every due, non-final scan once; safe to run twice at once (scans are claimed)."""
    run = scans_refresh_due()
    # What the cycle found (a failure, an outage) is alerted now rather than at the next beat tick; a broker
    # that cannot take the message only delays it to that tick.
    request_alert_send()
    return {"run": run.pk, "outcome": run.outcome, "asked": run.ids_asked, "changed": run.changed}


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150, ignore_result=True)
def send_alerts() -> dict:
    """Write new alerts to the outbox and mail the due ones; safe to run twice at once (alerts are claimed)."""
    detected, sent = alerts_run()
    return {"created": detected.created, "sent": len(sent.sent), "failed": len(sent.failed)}
