"""The checks behind /healthz: database, broker, poller freshness and the API's last verdict.

The database and the broker are pinged in threads of their own under one deadline, so a server that hangs or a
network that drops packets costs /healthz at most PING_DEADLINE_SECONDS: it answers 503 instead of hanging.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connections

from scans.poller_health import poller_health

PING_DEADLINE_SECONDS = 1.5
# Each client's own timeouts, so a thread left behind by the deadline ends soon after.
CONNECT_TIMEOUT_SECONDS = 1


@dataclass
class Health:
    """Each check's status word and details, and the reasons for every failing one."""

    checks: dict[str, dict] = field(default_factory=dict)
    failing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failing

    def add(self, name: str, status: str, problem: str = "", **details: object) -> None:
        self.checks[name] = {"status": status, **details}
        if problem:
            self.failing.append(f"{name}: {problem}")


def _ping_database() -> None:
    """Open a new connection with short timeouts and run SELECT 1; raises when the database cannot answer."""
    config = connections["default"].settings_dict
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # mode=rw: a missing database file is an error, not a new empty database.
        uri = Path(config["NAME"]).resolve().as_uri() + "?mode=rw"
        db = sqlite3.connect(uri, uri=True, timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            db.execute("SELECT 1")
        finally:
            db.close()
        return
    if config["ENGINE"] != "django.db.backends.postgresql":
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
        return
    import psycopg

    params = {"dbname": config["NAME"], "user": config["USER"], "password": config["PASSWORD"],
              "host": config["HOST"], "port": config["PORT"]}  # fmt: skip
    options = {key: value for key, value in config.get("OPTIONS", {}).items() if key in ("sslmode", "sslrootcert")}
    # libpq waits at least 2 s to connect; tcp_user_timeout ends a dead connection's reads as fast.
    with psycopg.connect(
        **{k: v for k, v in params.items() if v}, **options, connect_timeout=2, tcp_user_timeout=2000
    ) as db:
        db.execute("SELECT 1")


def _ping_broker() -> None:
    """Redis PING when REDIS_URL is set, else the filesystem broker's folder must take a new file."""
    if settings.REDIS_URL:
        import redis

        timeout = CONNECT_TIMEOUT_SECONDS
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
        return
    with tempfile.NamedTemporaryFile(dir=settings.CELERY_QUEUE_DIR, prefix=".healthz-"):
        pass


def _run_with_deadline(pings: dict[str, Callable[[], None]], seconds: float) -> dict[str, str]:
    """Run each ping in a daemon thread; return each one's problem ("" when fine) once all end or time is up."""
    problems = dict.fromkeys(pings, f"no answer within {seconds:g} s")

    def run(name: str, ping: Callable[[], None]) -> None:
        try:
            ping()
        except Exception as exc:
            problems[name] = f"{type(exc).__name__}: {exc}"[:300]
        else:
            problems[name] = ""

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in pings.items()]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(timeout=max(deadline - time.monotonic(), 0))
    return dict(problems)


def system_health(*, now: datetime) -> Health:
    """Database, broker, poller and API, each with a status and a reason when it fails."""
    health = Health()
    problems = _run_with_deadline({"database": _ping_database, "broker": _ping_broker}, PING_DEADLINE_SECONDS)
    for name in ("database", "broker"):
        problem = problems[name]
        health.add(name, "fail" if problem else "ok", problem)
    if problems["database"]:
        # The poller and API checks read the database: skip them rather than hang on it.
        health.add("poller", "unknown", "database unreachable")
        health.add("api", "unknown")
        return health
    try:
        _add_poller_checks(health, now=now)
    except DatabaseError as exc:  # answered the ping, then failed: still a 503 with a reason, never a 500
        health.add("poller", "unknown", f"database error: {type(exc).__name__}")
    return health


def _add_poller_checks(health: Health, *, now: datetime) -> None:
    poller = poller_health(now=now)
    last = poller.last_success_at
    age = poller.age.total_seconds() if poller.age is not None else None
    problem = f"not refreshed for {poller.age_text}" if poller.stale else ""
    health.add(
        "poller", poller.state, problem, last_success_at=last.isoformat() if last else None,
        age_seconds=round(age) if age is not None else None,
        stale_after_seconds=round(poller.stale_after.total_seconds()),
    )  # fmt: skip
    run = poller.last_run
    api_problem = f"last refresh cycle {run.outcome}" if poller.api_failing else ""
    health.add(
        "api", poller.api_state, api_problem, last_outcome=run.outcome if run else None,
        last_refresh=run.started_at.isoformat() if run else None,
    )  # fmt: skip
