"""Chaos run: many scans, a faulty API, an outage and a killed worker; then check that nothing was lost or doubled.

    .venv/bin/python bench/chaos.py                                    # 300 scans, SQLite, Redis db 5
    .venv/bin/python bench/chaos.py --scans 2000 --workers 2 \\
        --postgres postgres://postgres@127.0.0.1:5432/postgres          # a throw-away PostgreSQL database
    .venv/bin/python bench/chaos.py --scans 100 --no-kill               # the small version CI runs

Everything is real: the Protecto simulator over HTTP (with 500s, 429s, malformed JSON and hanging answers at
random), Celery workers and beat as separate processes on Redis, the database, and an SMTP server that records
what it receives. Midway the API goes down for --outage seconds, and (unless --no-kill) every worker is killed
with SIGKILL while a batch is claimed and replaced. The script then waits until every scan is final and every
alert is sent, prints a table, and exits non-zero if any check fails:

- every scan's final status equals the simulator's truth;
- no status transition is recorded twice;
- every failed scan is mailed exactly once;
- the outage is mailed once as "API down" and once as "recovered".

Redis: the given database index is flushed first, so use one nothing else uses (default 5).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throwaway_db import create_postgres_database, drop_postgres_database  # noqa: E402

INTERVAL_SECONDS = 2
ALERT_ADDRESS = "ops@chaos.test"


@dataclass
class Run:
    """What the run started and what it saw."""

    args: argparse.Namespace
    var_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    workers: list[subprocess.Popen] = field(default_factory=list)
    beat: subprocess.Popen | None = None
    mails: list = field(default_factory=list)
    frozen_seconds: float | None = None
    elapsed: float = 0.0


def main() -> int:
    args = _options()
    run = Run(args=args, var_dir=Path(tempfile.mkdtemp(prefix="chaos-")))
    database = create_postgres_database(args.postgres, "chaos") if args.postgres else None
    from demo.simulator import ProtectoSimulator, SimulatorConfig

    simulator = ProtectoSimulator(SimulatorConfig(**_simulator_faults(args), quiet=True)).start()
    smtp = _start_smtp(run)
    try:
        _prepare(run, simulator.url, simulator.config.token, smtp.port, database)
        ids = _track(args.scans, simulator)
        _start_processes(run)
        _play(run, simulator)
        ok = _report(run, simulator, ids)
    finally:
        _stop_processes(run)
        smtp.stop()
        simulator.stop()
        if database:
            drop_postgres_database(args.postgres, database[0])
        shutil.rmtree(run.var_dir, ignore_errors=True)
    return 0 if ok else 1


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--postgres", metavar="ADMIN_URL", help="run on a throw-away PostgreSQL database")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/5", help="a Redis database to flush and use")
    parser.add_argument("--outage", type=float, default=20.0, help="seconds the API answers only 500")
    parser.add_argument("--no-kill", action="store_true", help="do not kill the workers mid-batch")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    return parser.parse_args()


def _simulator_faults(args: argparse.Namespace) -> dict:
    """Scans that finish within half a minute, and an API that fails in every documented way now and then."""
    return {
        "pending_seconds": (1.0, 10.0),
        "running_seconds": (2.0, 20.0),
        "failure_rate": 0.25,
        "error_rate": 0.10,
        "rate_limit_rate": 0.05,
        "retry_after": 0.5,
        "malformed_rate": 0.02,
        "hang_rate": 0.03,
        "hang_seconds": 4.0,
        "seed": 20261129,
    }


class _Inbox:
    """An SMTP handler that keeps every message it receives."""

    def __init__(self, run: Run) -> None:
        self.run = run

    async def handle_DATA(self, server, session, envelope):
        from email import message_from_bytes, policy

        self.run.mails.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"


def _start_smtp(run: Run):
    import socket

    from aiosmtpd.controller import Controller

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(_Inbox(run), hostname="127.0.0.1", port=port)
    controller.start()
    controller.port = port
    return controller


def _prepare(run: Run, api_url: str, token: str, smtp_port: int, database: tuple[str, str] | None) -> None:
    """The environment every process of the run shares, then Django in this process, migrated."""
    import redis

    redis.Redis.from_url(run.args.redis).flushdb()
    (run.var_dir / "celery-queue" / "control").mkdir(parents=True)
    run.env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "PROTECTO_", "EMAIL_"))},
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "VAR_DIR": str(run.var_dir),
        "SECRET_KEY": "chaos-run-only-" + "x" * 32,
        "REDIS_URL": run.args.redis,
        "PROTECTO_API_URL": api_url,
        "PROTECTO_AUTH_TOKEN": token,
        "PROTECTO_BATCH_SIZE": "50",
        "PROTECTO_TIMEOUT_SECONDS": "2",
        "PROTECTO_MAX_RETRIES": "1",
        "PROTECTO_BACKOFF_SECONDS": "0.1",
        "REFRESH_INTERVAL_SECONDS": str(INTERVAL_SECONDS),
        "ALERT_EMAILS": ALERT_ADDRESS,
        "ALERT_API_DOWN_AFTER": "3",
        "ALERT_DIGEST_THRESHOLD": "1000000",  # one mail per failure, so each can be counted
        "STUCK_PENDING_MINUTES": "600",
        "STUCK_RUNNING_MINUTES": "600",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp_port),
        "LOG_LEVEL": "WARNING",
    }
    if database:
        run.env["DATABASE_URL"] = database[1]
    os.environ.update(run.env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _track(count: int, simulator) -> list[str]:
    """Start `count` scans in the simulator (their truth) and track them in the dashboard."""
    from scans.services import scans_track

    ids = [f"chaos-{n:06d}" for n in range(count)]
    for tracking_id in ids:
        simulator.add_scan(tracking_id)
    scans_track(ids=ids)
    return ids


def _celery(run: Run, *command: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "dashboard", *command, "--loglevel", "WARNING"],
        cwd=ROOT,
        env=run.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _start_workers(run: Run) -> None:
    for n in range(run.args.workers):
        run.workers.append(_celery(run, "worker", "--pool", "solo", "-n", f"chaos{n}-{time.time_ns()}@%h"))


def _start_processes(run: Run) -> None:
    _start_workers(run)
    schedule = str(run.var_dir / "celerybeat-schedule")
    run.beat = _celery(run, "beat", "--schedule", schedule)


def _play(run: Run, simulator) -> None:
    """Let it run, take the API down, kill the workers mid-batch, and wait until everything has settled."""
    start = time.monotonic()
    _wait(run, start, lambda: _refresh_runs() >= 5, "five refresh cycles")
    simulator.configure(error_rate=1.0)
    time.sleep(run.args.outage)
    simulator.configure(error_rate=_simulator_faults(run.args)["error_rate"])
    if not run.args.no_kill:
        _kill_workers_mid_batch(run, start)
    _wait(run, start, _settled, "every scan final, every alert sent and the recovery mailed")
    run.elapsed = time.monotonic() - start


def _kill_workers_mid_batch(run: Run, start: float) -> None:
    """SIGKILL every worker while some scans are claimed, start new ones, and time how long that batch waits."""
    from scans.models import Scan

    _wait(run, start, lambda: Scan.objects.exclude(claim_token="").exists(), "a claimed batch")
    frozen = set(Scan.objects.exclude(claim_token="").values_list("pk", flat=True))
    killed_at = time.monotonic()
    for worker in run.workers:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    run.workers.clear()
    _start_workers(run)

    def thawed() -> bool:
        return not Scan.objects.filter(pk__in=frozen).exclude(claim_token="").exists()

    _wait(run, start, thawed, "the killed batch to be polled again")
    run.frozen_seconds = time.monotonic() - killed_at


def _refresh_runs() -> int:
    from scans.models import RefreshRun

    return RefreshRun.objects.exclude(outcome=RefreshRun.Outcome.RUNNING).count()


def _settled() -> bool:
    from scans.models import Alert, Scan

    if Scan.objects.active().exists() or Alert.objects.filter(state=Alert.State.PENDING).exists():
        return False
    return Alert.objects.filter(kind=Alert.Kind.API_RECOVERED).exists()


def _wait(run: Run, start: float, condition, what: str) -> None:
    from django.db import close_old_connections

    while not condition():
        if time.monotonic() - start > run.args.timeout:
            raise SystemExit(f"chaos: gave up after {run.args.timeout:.0f} s waiting for {what}")
        for process in [*run.workers, run.beat]:
            if process is not None and process.poll() is not None:
                raise SystemExit(f"chaos: a Celery process exited with status {process.returncode}")
        time.sleep(0.5)
        close_old_connections()


def _stop_processes(run: Run) -> None:
    for process in [*run.workers, run.beat]:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in [*run.workers, run.beat]:
        if process is not None:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _report(run: Run, simulator, ids: list[str]) -> bool:
    """Print the table and return whether every check passed."""
    from django.db.models import Count

    from scans.models import RefreshRun, Scan, StatusChange

    truth = {tracking_id: simulator.scan_status(tracking_id).strip().upper() for tracking_id in ids}
    stored = dict(Scan.objects.values_list("tracking_id", "status"))
    matching = sum(stored.get(tracking_id) == status for tracking_id, status in truth.items())
    doubled = StatusChange.objects.values("scan", "to_status").annotate(n=Count("pk")).filter(n__gt=1).count()
    by_kind = Counter(mail["X-Scan-Alert-Kind"] for mail in run.mails)
    failed_ids = [tracking_id for tracking_id, status in truth.items() if status == "FAILED"]
    per_failure = _mails_per_scan(run.mails, failed_ids)
    outcomes = Counter(RefreshRun.objects.values_list("outcome", flat=True))
    checks = {
        "statuses matching the API's truth": (f"{matching} / {len(ids)}", matching == len(ids)),
        "transitions recorded twice": (doubled, doubled == 0),
        "failed scans mailed exactly once": (
            f"{sum(n == 1 for n in per_failure.values())} / {len(failed_ids)}",
            all(n == 1 for n in per_failure.values()),
        ),
        "'API down' mails": (by_kind["api_down"], by_kind["api_down"] == 1),
        "'API recovered' mails": (by_kind["api_recovered"], by_kind["api_recovered"] == 1),
    }
    _print_table(run, checks, outcomes)
    return all(ok for _, ok in checks.values())


def _mails_per_scan(mails: list, tracking_ids: list[str]) -> dict[str, int]:
    bodies = [mail.get_body(("plain",)).get_content() for mail in mails if mail["X-Scan-Alert-Kind"] == "failed"]
    counts = dict.fromkeys(tracking_ids, 0)
    for body in bodies:
        for tracking_id in tracking_ids:
            if tracking_id in body:
                counts[tracking_id] += 1
    return counts


def _print_table(run: Run, checks: dict, outcomes: Counter) -> None:
    from django.db import connection

    args = run.args
    print(
        f"\nchaos run: {args.scans} scans, {args.workers} workers, {connection.vendor}, outage {args.outage:.0f} s"
    )
    print(f"settled in {run.elapsed:.0f} s; refresh cycles by outcome: {dict(outcomes)}")
    frozen = "not killed" if run.frozen_seconds is None else f"{run.frozen_seconds:.0f} s"
    print(f"{'a killed batch stayed claimed for':<40} {frozen}")
    for name, (value, ok) in checks.items():
        print(f"{name:<40} {value!s:<14} {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    sys.exit(main())
