"""`manage.py watchdog`: the stale-poller alert sent with no Celery worker at all, over real SMTP (aiosmtpd), never
twice even beside the Celery sender; and `--check-beat`, the beat container's health check, against a real beat."""

import io
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command, get_commands
from django.db import connection
from django.utils import timezone

from scans.alerts import alerts_send_due
from scans.models import Alert, Scan
from tests.factories import make_refresh_run, make_scan
from tests.tcp_proxy import TcpProxy
from tests.test_celery import _database_url_for_subprocess

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
OPS = ["ops@example.com"]


@pytest.fixture
def mail(settings, smtp_server):
    settings.ALERT_EMAILS = OPS
    settings.REFRESH_INTERVAL_SECONDS = 30
    settings.STALE_AFTER_INTERVALS = 3
    return smtp_server


def a_dead_poller(*, minutes: int = 5) -> None:
    """Scans to poll, and the last refresh `minutes` ago: then nothing (the worker, beat or broker died)."""
    make_scan(status=Scan.Status.PENDING, created_at=timezone.now() - timedelta(hours=1))
    moment = timezone.now() - timedelta(minutes=minutes)
    make_refresh_run(started_at=moment, finished_at=moment, ids_asked=1, ids_answered=1)


def subjects(inbox) -> list[str]:
    return [message["Subject"] for message in inbox.messages]


@pytest.mark.django_db
def test_one_watchdog_pass_mails_a_stale_poller_once(mail):
    a_dead_poller()
    out = io.StringIO()

    call_command("watchdog", "--once", stdout=out)
    call_command("watchdog", "--once", stdout=io.StringIO())

    assert subjects(mail) == ["[Scan dashboard STALE] not refreshed for 5 min"]
    assert "watchdog: sent [Scan dashboard STALE]" in out.getvalue()


@pytest.mark.django_db
def test_the_watchdog_also_sends_alerts_the_celery_sender_left_waiting(mail):
    make_scan("failed-scan", status=Scan.Status.FAILED, last_changed_at=timezone.now())
    from scans.alerts import alerts_detect

    alerts_detect()  # written by a worker that died before sending

    call_command("watchdog", "--once", stdout=io.StringIO())

    assert subjects(mail) == ["[FAILED] failed-scan"]


@pytest.mark.django_db(transaction=True)
def test_a_watchdog_process_mails_the_stale_alert_with_no_celery_worker_running(mail, settings):
    a_dead_poller()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url_for_subprocess(),
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(mail.port),
        "ALERT_EMAILS": ",".join(OPS),
        "REFRESH_INTERVAL_SECONDS": "30",
        "STALE_AFTER_INTERVALS": "3",
        "REDIS_URL": "",
    }

    done = subprocess.run(
        [sys.executable, "manage.py", "watchdog", "--once"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert subjects(mail) == ["[Scan dashboard STALE] not refreshed for 5 min"]


@pytest.mark.django_db(transaction=True)
def test_the_watchdog_and_the_celery_sender_at_once_mail_each_alert_once(mail, settings):
    settings.ALERT_DIGEST_THRESHOLD = 1000
    for n in range(30):
        make_scan(f"fail-{n:02d}", status=Scan.Status.FAILED, last_changed_at=timezone.now())
    from scans.alerts import alerts_detect

    alerts_detect()
    a_dead_poller()
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def run(target) -> None:
        try:
            start.wait()
            deadline = time.monotonic() + 20
            while Alert.objects.filter(state=Alert.State.PENDING).exists() and time.monotonic() < deadline:
                target()
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(lambda: call_command("watchdog", "--once", stdout=io.StringIO()),)),
        threading.Thread(target=run, args=(lambda: alerts_send_due(limit=3),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert failures == []
    message_ids = [message["Message-ID"] for message in mail.messages]
    assert len(message_ids) == len(set(message_ids)) == 31  # 30 failures and the stale poller, each once


@pytest.mark.django_db(transaction=True)
def test_the_watchdog_loop_outlives_a_database_outage_and_then_sends(mail):
    if connection.vendor != "postgresql":
        pytest.skip("a network fault needs a database behind TCP")
    a_dead_poller()
    config = connection.settings_dict
    with TcpProxy(config["HOST"] or "127.0.0.1", int(config["PORT"] or 5432)) as proxy:
        proxy.refuse()
        url = _database_url_for_subprocess().replace(f":{config['PORT'] or 5432}/", f":{proxy.port}/")
        env = {**os.environ, "DATABASE_URL": url, "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(mail.port),
               "ALERT_EMAILS": ",".join(OPS), "WATCHDOG_INTERVAL_SECONDS": "5", "REDIS_URL": ""}  # fmt: skip
        watchdog = subprocess.Popen(
            [sys.executable, "manage.py", "watchdog"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            time.sleep(3)  # its first pass meets a database that refuses
            assert watchdog.poll() is None
            proxy.heal()
            deadline = time.monotonic() + 20
            while not mail.messages and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            watchdog.terminate()
            _, errors = watchdog.communicate(timeout=20)

    assert "watchdog: database unavailable" in errors
    assert subjects(mail) == ["[Scan dashboard STALE] not refreshed for 5 min"]


# --- --check-beat -------------------------------------------------------------------------------------------


def test_check_beat_passes_on_a_fresh_schedule_file_and_fails_on_an_old_or_missing_one(settings, tmp_path):
    settings.CELERY_BEAT_SCHEDULE_FILENAME = str(tmp_path / "celerybeat-schedule")
    settings.REFRESH_INTERVAL_SECONDS = 30
    with pytest.raises(CommandError, match="no beat schedule file"):
        call_command("watchdog", "--check-beat", stdout=io.StringIO())

    schedule = tmp_path / "celerybeat-schedule.db"  # whatever suffix the dbm module adds
    schedule.write_bytes(b"")
    call_command("watchdog", "--check-beat", stdout=io.StringIO())

    old = time.time() - (180 + 60 + 60 + 1)
    os.utime(schedule, (old, old))
    with pytest.raises(CommandError, match="beat is stuck"):
        call_command("watchdog", "--check-beat", stdout=io.StringIO())


def test_a_running_beat_passes_its_own_health_check(tmp_path):
    env = {**os.environ, "VAR_DIR": str(tmp_path), "REDIS_URL": "", "DATABASE_URL": f"sqlite:///{tmp_path}/db"}
    # The compose check, less its `timeout 20` guard and its `|| kill` (which would end this test run).
    check = COMPOSE["services"]["beat"]["healthcheck"]["test"][1].split(" || ")[0].split()
    assert check[:2] == ["timeout", "20"]
    check = check[2:]
    assert check[:3] == ["python", "manage.py", "watchdog"] and "watchdog" in get_commands()
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "dashboard", "beat", "--loglevel", "INFO"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not list(tmp_path.glob("celerybeat-schedule*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        done = subprocess.run([sys.executable, *check[1:]], cwd=ROOT, env=env, capture_output=True, text=True)
    finally:
        beat.terminate()
        beat.wait(timeout=20)

    assert done.returncode == 0, done.stderr
    assert "beat ok" in done.stdout


def test_compose_runs_the_watchdog_as_its_own_service():
    command = COMPOSE["services"]["watchdog"]["command"]

    assert command == ["python", "manage.py", "watchdog"]
    assert "celery" not in " ".join(COMPOSE["services"]["watchdog"].get("depends_on", {}))
