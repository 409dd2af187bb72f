"""The Celery application and the one place that declares the beat schedule."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

app = Celery("dashboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _schedule_refresh(sender: Celery, **kwargs) -> None:
    from django.conf import settings

    sender.add_periodic_task(
        float(settings.REFRESH_INTERVAL_SECONDS),
        sender.signature("scans.tasks.refresh_due_scans"),
        name="refresh due scans",
        # A beat tick that waited longer than one interval is stale: the next tick does the same work.
        expires=float(settings.REFRESH_INTERVAL_SECONDS),
    )
    # Alerts waiting for a mail server that was down are retried by this tick too.
    sender.add_periodic_task(
        float(settings.REFRESH_INTERVAL_SECONDS),
        sender.signature("scans.tasks.send_alerts"),
        name="send alerts",
        expires=float(settings.REFRESH_INTERVAL_SECONDS),
    )
    # Retention: bounded batches every hour; what one run leaves, the next continues.
    sender.add_periodic_task(
        3600.0, sender.signature("scans.tasks.purge_history"), name="purge history", expires=3600.0
    )
