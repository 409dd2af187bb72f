"""Celery tasks: thin wrappers that call services."""

from celery import shared_task
from django.utils import timezone

from scans.alerts import alerts_run
from scans.refresh import refresh_after_batch, refresh_dispatch, refresh_finish, scans_refresh_batch
from scans.retention import retention_run
from scans.services import request_alert_send, scans_queue_refresh_batches


def _queue_of(task) -> str | None:
    """The queue this task came from: batches follow their dispatcher's queue."""
    return (task.request.delivery_info or {}).get("routing_key")


@shared_task(bind=True, acks_late=True, soft_time_limit=60, time_limit=90, ignore_result=True)
def refresh_due_scans(self) -> dict:
    """Beat's tick: claim due scans in batches and send one refresh_batch task per batch (no polling here)."""
    dispatch = refresh_dispatch()
    if dispatch.run is None:
        return {"run": None, "batches": 0}
    sent = scans_queue_refresh_batches(run_id=dispatch.run.pk, tokens=dispatch.tokens, queue=_queue_of(self))
    if refresh_finish(run_id=dispatch.run.pk):
        # Nothing due (or nothing could be sent): the run is closed now; what it found is alerted now.
        request_alert_send()
    return {"run": dispatch.run.pk, "batches": sent}


@shared_task(bind=True, acks_late=True, soft_time_limit=240, time_limit=270, ignore_result=True)
def refresh_batch(self, run_id: int, token: str) -> dict:
    """Poll one claimed batch; claim and send the next while the run is the newest; close the run if done."""
    result = scans_refresh_batch(run_id=run_id, token=token)
    follow = refresh_after_batch(result=result)
    scans_queue_refresh_batches(run_id=run_id, tokens=follow.tokens, queue=_queue_of(self))
    closed = refresh_finish(run_id=run_id)
    if closed:
        # What the cycle found (a failure, an outage) is alerted now rather than at the next beat tick.
        request_alert_send()
    return {"run": run_id, "asked": result.asked, "changed": result.changed, "worker": self.request.hostname}


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150, ignore_result=True)
def send_alerts() -> dict:
    """Write new alerts to the outbox and mail the due ones; safe to run twice at once (alerts are claimed)."""
    detected, sent = alerts_run()
    return {"created": detected.created, "sent": len(sent.sent), "failed": len(sent.failed)}


@shared_task(acks_late=True, soft_time_limit=300, time_limit=360, ignore_result=True)
def purge_history() -> dict:
    """Archive finished scans and delete old history in bounded batches; safe to run twice at once."""
    return retention_run(now=timezone.now()).as_dict()
