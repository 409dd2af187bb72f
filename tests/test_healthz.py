"""/healthz: separate database, broker, poller and API checks; 503 with the reasons, fast even when a server hangs.

Faults come from a real TCP proxy (tests/tcp_proxy.py) in front of the real PostgreSQL and Redis.
"""

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from scans.models import Scan
from tests.factories import make_refresh_run, make_scan
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.django_db

# What /healthz may take when a server hangs: its own deadline (1.5 s) plus a Django test request.
ANSWER_WITHIN_SECONDS = 2.5


@pytest.fixture(autouse=True)
def _interval(settings):
    settings.REFRESH_INTERVAL_SECONDS = 30
    settings.STALE_AFTER_INTERVALS = 3


def healthz(client) -> tuple[int, dict, float]:
    started = time.monotonic()
    response = client.get("/healthz")
    return response.status_code, response.json(), time.monotonic() - started


def a_working_poller(*, seconds_ago: float = 10) -> None:
    make_scan(status=Scan.Status.PENDING, created_at=timezone.now() - timedelta(hours=1))
    moment = timezone.now() - timedelta(seconds=seconds_ago)
    make_refresh_run(started_at=moment, finished_at=moment, ids_asked=1, ids_answered=1)


def test_everything_fine_is_200_with_each_check_named(client):
    a_working_poller()

    status, body, _ = healthz(client)

    assert status == 200
    assert (body["status"], body["database"], body["broker"], body["poller"], body["api"]) == (
        "ok", "ok", "ok", "fresh", "ok",
    )  # fmt: skip
    assert body["failing"] == []
    assert 5 <= body["checks"]["poller"]["age_seconds"] <= 15
    assert body["checks"]["api"]["last_outcome"] == "ok"


def test_a_stale_poller_is_503_with_its_age_while_database_and_broker_are_fine(client):
    a_working_poller(seconds_ago=4 * 60 + 5)

    status, body, _ = healthz(client)

    assert status == 503
    assert (body["database"], body["broker"], body["poller"]) == ("ok", "ok", "stale")
    assert body["failing"] == ["poller: not refreshed for 4 min"]


def test_a_failing_api_is_503_and_told_apart_from_a_stale_poller(client):
    a_working_poller(seconds_ago=30)
    make_refresh_run(outcome="failed", error_text="HTTP 503 from Protecto")

    status, body, _ = healthz(client)

    assert (status, body["poller"], body["api"]) == (503, "fresh", "failed")
    assert body["failing"] == ["api: last refresh cycle failed"]


@pytest.mark.parametrize("fault", ["refuse", "blackhole"])
def test_a_redis_broker_that_refuses_or_hangs_is_503_within_two_seconds(client, settings, redis_url, fault):
    a_working_poller()
    host, port = redis_url.split("//")[1].split("/")[0].split(":")
    with TcpProxy(host, int(port)) as proxy:
        settings.REDIS_URL = f"redis://127.0.0.1:{proxy.port}/0"
        assert healthz(client)[0] == 200  # through the proxy, healthy
        getattr(proxy, fault)()

        status, body, elapsed = healthz(client)

    assert (status, body["broker"], body["database"]) == (503, "fail", "ok")
    assert body["failing"][0].startswith("broker: ")
    assert elapsed < ANSWER_WITHIN_SECONDS


def test_a_filesystem_broker_folder_that_cannot_take_files_is_503(client, settings, tmp_path):
    a_working_poller()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings.REDIS_URL = ""
    settings.CELERY_QUEUE_DIR = blocker / "celery-queue"

    status, body, _ = healthz(client)

    assert (status, body["broker"]) == (503, "fail")


@pytest.mark.parametrize("fault", ["refuse", "blackhole"])
def test_a_postgresql_that_refuses_or_hangs_is_503_within_two_seconds(client, monkeypatch, fault):
    if connection.vendor != "postgresql":
        pytest.skip("a network fault needs a database behind TCP")
    a_working_poller()
    config = connection.settings_dict
    with TcpProxy(config["HOST"] or "127.0.0.1", int(config["PORT"] or 5432)) as proxy:
        # Only new connections go through the proxy: the test's own (open, in its transaction) is untouched.
        monkeypatch.setitem(config, "HOST", "127.0.0.1")
        monkeypatch.setitem(config, "PORT", str(proxy.port))
        assert healthz(client)[0] == 200
        getattr(proxy, fault)()

        status, body, elapsed = healthz(client)

    assert (status, body["database"], body["poller"]) == (503, "fail", "unknown")
    assert body["failing"][0].startswith("database: ")
    assert elapsed < ANSWER_WITHIN_SECONDS


def test_a_sqlite_file_that_cannot_be_opened_is_503(client, monkeypatch, tmp_path):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    monkeypatch.setitem(connection.settings_dict, "NAME", str(tmp_path / "missing-folder" / "db.sqlite3"))

    status, body, _ = healthz(client)

    assert (status, body["database"], body["poller"]) == (503, "fail", "unknown")
