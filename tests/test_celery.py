"""Celery: the beat schedule, the task's safety options, and a real worker process on the real Redis broker."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from celery import Celery
from django.db import connection
from django.utils import timezone

from dashboard.celery import app
from scans.models import RefreshRun, Scan
from scans.services import scans_track
from scans.tasks import purge_history, refresh_due_scans, send_alerts
from tests.factories import make_scan

ROOT = Path(__file__).resolve().parent.parent


def test_every_beat_entry_names_a_task_a_worker_has_registered():
    # Beat sends task names as plain strings: a name no worker knows is dropped by the worker, and the refresh
    # (or the alert retry after a mail outage) silently never runs.
    app.loader.import_default_modules()
    app.finalize()
    scheduled = sorted(entry["task"] for entry in app.conf.beat_schedule.values())

    assert scheduled == sorted([refresh_due_scans.name, send_alerts.name, purge_history.name])
    assert all(name in app.tasks for name in scheduled)


@pytest.mark.django_db
def test_the_send_alerts_task_mails_what_is_due(settings, smtp_server):
    settings.ALERT_EMAILS = ["ops@example.com"]
    make_scan("task-scan", status=Scan.Status.FAILED, last_changed_at=timezone.now())

    outcome = send_alerts.apply().get()

    assert outcome == {"created": {"failed": 1}, "sent": 1, "failed": 0}
    assert [message["Subject"] for message in smtp_server.messages] == ["[FAILED] task-scan"]


def _database_url_for_subprocess() -> str:
    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{config['NAME']}"
    user = config["USER"] + (f":{config['PASSWORD']}" if config["PASSWORD"] else "")
    return f"postgres://{user}@{config['HOST'] or 'localhost'}:{config['PORT'] or 5432}/{config['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_a_worker_process_on_redis_runs_the_refresh_end_to_end(redis_url, simulator, tmp_path):
    simulator.add_scan("worker-scan", status="FAILED", error_msg="Quota exceeded for tenant")
    scans_track(ids=["worker-scan"])
    queue = f"test-refresh-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DATABASE_URL": _database_url_for_subprocess(),
        "REDIS_URL": redis_url,
        "PROTECTO_API_URL": simulator.url,
        "PROTECTO_AUTH_TOKEN": simulator.config.token,
        "VAR_DIR": str(tmp_path),
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dashboard",
            "worker",
            "--pool",
            "solo",
            "-Q",
            queue,
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        Celery("producer", broker=redis_url, set_as_current=False).send_task(
            "scans.tasks.refresh_due_scans", queue=queue
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not RefreshRun.objects.exclude(outcome="running").exists():
            assert worker.poll() is None, worker.stdout.read()
            time.sleep(0.2)
    finally:
        worker.terminate()
        output = worker.communicate(timeout=20)[0]

    run = RefreshRun.objects.get()
    assert run.outcome == RefreshRun.Outcome.OK, output
    scan = Scan.objects.get(tracking_id="worker-scan")
    assert (scan.status, scan.error_message) == ("FAILED", "Quota exceeded for tenant")
    assert "redis://" in output  # the worker really used the Redis broker
