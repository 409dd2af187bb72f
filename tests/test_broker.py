"""The broker can't hang us: a real worker and beat recover from a silent Redis cut, and pages never wait on Redis.

Redis is the real one, reached through tests/tcp_proxy.py, which refuses, black-holes or silently severs the
connections the way a dead server, a hung one or a NAT idle-timeout would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from importlib import import_module
from pathlib import Path

import pytest
import redis
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone

from scans.models import Alert, RefreshRun, Scan
from scans.views.scans import QUEUE_UNREACHABLE
from tests.factories import make_scan
from tests.helpers import page_text
from tests.tcp_proxy import TcpProxy
from tests.test_celery import _database_url_for_subprocess

ROOT = Path(__file__).resolve().parent.parent
# What the issue asks: beat and worker back to work within 60 s of the network healing.
RECOVERY_LIMIT_SECONDS = 60


@pytest.fixture
def redis_proxy(redis_url):
    """A proxy in front of the test's real Redis, and the broker URL that goes through it (same db number)."""
    target = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    with TcpProxy(target.get("host", "127.0.0.1"), target.get("port", 6379)) as proxy:
        proxy.broker_url = f"redis://127.0.0.1:{proxy.port}/{target.get('db', 0)}"
        yield proxy


@pytest.fixture
def broker_through_proxy(settings, redis_proxy):
    """The web process publishes through the proxy (Celery reads these settings live; the publish sets its own
    short timeouts, so the transport options here matter only in that they are Redis ones)."""
    settings.CELERY_BROKER_URL = redis_proxy.broker_url
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
    return redis_proxy


@pytest.fixture
def roles(transactional_db) -> None:
    """The role groups again after a transactional test's flush, made by the roles migration's own code."""
    state = MigrationLoader(None, ignore_no_migrations=True).project_state(("scans", "0002_roles"))
    import_module("scans.migrations.0002_roles").create_roles(state.apps, None)


@pytest.fixture
def operator_page(roles, operator_client):
    """An operator's client on a transactional database, so a queued task is sent as the view commits."""
    return operator_client


def _runs_finished() -> int:
    return RefreshRun.objects.exclude(outcome=RefreshRun.Outcome.RUNNING).count()


def _wait_for_runs(count: int, *, within: float, worker: subprocess.Popen) -> float:
    """Seconds until `count` cycles have finished; fails after `within` seconds or if the worker died."""
    start = time.monotonic()
    while _runs_finished() < count:
        assert worker.poll() is None, "the worker process exited"
        assert time.monotonic() - start < within, f"only {_runs_finished()} cycles of {count} after {within:.0f} s"
        time.sleep(0.25)
    return time.monotonic() - start


def _start_worker_with_beat(broker_url: str, simulator, tmp_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": _database_url_for_subprocess(),
        "REDIS_URL": broker_url,
        "PROTECTO_API_URL": simulator.url,
        "PROTECTO_AUTH_TOKEN": simulator.config.token,
        "REFRESH_INTERVAL_SECONDS": "2",
        "VAR_DIR": str(tmp_path),
    }
    # The product's BROKER_* defaults are what is under test: the environment must not override them.
    for name in ("BROKER_SOCKET_TIMEOUT_SECONDS", "BROKER_HEALTH_CHECK_SECONDS"):
        env.pop(name, None)
    command = [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "-B", "--pool", "solo"]
    command += ["--without-mingle", "--without-gossip", "--loglevel", "INFO"]
    log = (tmp_path / "worker.log").open("w")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_worker_and_beat_resume_within_a_minute_of_a_silent_redis_cut(redis_url, redis_proxy, simulator, tmp_path):
    worker = _start_worker_with_beat(redis_proxy.broker_url, simulator, tmp_path)
    try:
        _wait_for_runs(2, within=45, worker=worker)
        redis_proxy.sever_silently()  # every flow dropped without FIN or RST, as by a NAT idle timeout
        time.sleep(5)
        redis_proxy.heal()
        before = _runs_finished()
        recovered = _wait_for_runs(before + 2, within=RECOVERY_LIMIT_SECONDS, worker=worker)
        print(f"cycles resumed {recovered:.1f} s after the network healed")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert recovered < RECOVERY_LIMIT_SECONDS, (tmp_path / "worker.log").read_text()


@pytest.fixture
def due_later():
    """A pending scan whose next check is an hour away."""
    return make_scan("queue-scan", status=Scan.Status.PENDING, next_check_at=timezone.now() + timedelta(hours=1))


def _refresh(client, scan: Scan) -> tuple[float, object]:
    start = time.monotonic()
    response = client.post(f"/scans/{scan.tracking_id}/refresh/", follow=True)
    return time.monotonic() - start, response


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fault", ["refuse", "blackhole"])
def test_a_refresh_request_never_waits_on_a_dead_broker(operator_page, broker_through_proxy, due_later, fault):
    getattr(broker_through_proxy, fault)()

    took, response = _refresh(operator_page, due_later)

    assert took < 1.5
    due_later.refresh_from_db()
    assert due_later.poll.next_check_at <= timezone.now()  # the action took effect: the next cycle polls it
    assert QUEUE_UNREACHABLE in page_text(response)


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_refresh_request_through_a_working_broker_is_queued_now(
    operator_page, broker_through_proxy, due_later, redis_url
):
    queue = redis.Redis.from_url(redis_url)
    queue.delete("celery")

    took, response = _refresh(operator_page, due_later)

    assert took < 1.5
    assert QUEUE_UNREACHABLE not in page_text(response)
    assert "Refresh requested." in page_text(response)
    assert queue.llen("celery") == 1
    queue.delete("celery")


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_adding_scans_while_the_broker_hangs_says_they_wait_for_the_next_cycle(
    operator_page, broker_through_proxy
):
    broker_through_proxy.blackhole()
    start = time.monotonic()

    response = operator_page.post("/add/", {"ids": "new-while-down"})

    assert time.monotonic() - start < 1.5
    assert "queued for the next refresh cycle (the task queue is unreachable right now)" in page_text(response)
    assert Scan.objects.get(tracking_id="new-while-down").poll.next_check_at <= timezone.now()


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_bulk_refresh_while_the_broker_hangs_makes_the_scans_due_and_says_so(
    operator_page, broker_through_proxy
):
    broker_through_proxy.blackhole()
    later = timezone.now() + timedelta(hours=1)
    scans = [make_scan(f"bulk-{n}", status=Scan.Status.PENDING, next_check_at=later) for n in range(2)]
    start = time.monotonic()

    response = operator_page.post("/bulk/refresh/", {"ids": [scan.tracking_id for scan in scans]}, follow=True)

    assert time.monotonic() - start < 1.5
    assert QUEUE_UNREACHABLE in page_text(response)
    assert Scan.objects.filter(poll__next_check_at__lte=timezone.now()).count() == 2


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_resending_an_alert_while_the_broker_refuses_leaves_it_due_for_the_next_cycle(
    operator_page, broker_through_proxy
):
    broker_through_proxy.refuse()
    scan = make_scan("alerted-scan", status=Scan.Status.FAILED)
    alert = Alert.objects.create(
        kind=Alert.Kind.FAILED,
        scan=scan,
        subject="[Scan FAILED] alerted-scan",
        body_text="-",
        body_html="-",
        next_attempt_at=timezone.now() + timedelta(hours=1),
    )
    start = time.monotonic()

    response = operator_page.post(f"/alerts/{alert.pk}/resend/", follow=True)

    assert time.monotonic() - start < 1.5
    assert "the next cycle sends it (the task queue is unreachable)" in page_text(response)
    alert.refresh_from_db()
    assert alert.next_attempt_at <= timezone.now()
