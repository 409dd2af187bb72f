"""Chaos run: many scans, a faulty API, an outage, a killed worker, a mail server and a broker that vanish.

    .venv/bin/python bench/chaos.py                                    # 300 scans, SQLite, Redis db 5
    .venv/bin/python bench/chaos.py --scans 2000 --workers 2 \\
        --postgres postgres://postgres@127.0.0.1:5432/postgres          # a throw-away PostgreSQL database
    .venv/bin/python bench/chaos.py --small                            # the version CI runs (about a minute)

Everything is real: the Protecto simulator over HTTP (with 500s, 429s, malformed JSON and hanging answers at
random), Celery workers, beat and the watchdog as separate processes on Redis, the database, and an SMTP server
that records what it receives. Redis and SMTP are reached through TCP proxies (tests/tcp_proxy.py) that can fail
them without touching the real servers. The script plays, in order:

1. the mail server refuses connections from the start until the API outage is over (alerts wait in the outbox);
2. after five cycles the API answers only 500 for --outage seconds, and during it (unless --no-kill) every worker
   is killed with SIGKILL while a batch is claimed, and replaced; the time that batch stays claimed is measured;
3. the mail server comes back: the time until every alert that was waiting is delivered is measured;
4. the broker's connections are cut silently (no FIN, no RST: a NAT dropping idle flows) for --cut seconds;
   the time until refresh cycles complete again is measured.

It then waits until every scan is final and every alert is sent, prints a table, and exits non-zero if any check
fails:

- every scan's final status equals the simulator's truth;
- no status transition is recorded twice;
- every failed scan is mailed exactly once;
- the outage is mailed once as "API down" and once as "recovered";
- cycles resumed within 60 s of the broker coming back.

Redis: the given database index is flushed first, so use one nothing else uses (default 5).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throwaway_db import create_postgres_database, drop_postgres_database  # noqa: E402
from tests.tcp_proxy import TcpProxy  # noqa: E402

INTERVAL_SECONDS = 2
ALERT_ADDRESS = "ops@chaos.test"
# The promise: beat and the worker recover from a silent broker cut within this.
BROKER_RECOVERY_LIMIT_SECONDS = 60


@dataclass
class Run:
    """What the run started and what it saw."""

    args: argparse.Namespace
    var_dir: Path
    redis_proxy: TcpProxy
    smtp_proxy: TcpProxy
    env: dict[str, str] = field(default_factory=dict)
    workers: list[subprocess.Popen] = field(default_factory=list)
    others: list[subprocess.Popen] = field(default_factory=list)
    mails: list = field(default_factory=list)
    frozen_seconds: float | None = None
    smtp_recovery_seconds: float | None = None
    alerts_held_by_smtp: int = 0
    broker_recovery_seconds: float | None = None
    elapsed: float = 0.0


def main() -> int:
    args = _options()
    database = create_postgres_database(args.postgres, "chaos") if args.postgres else None
    from demo.simulator import ProtectoSimulator, SimulatorConfig

    simulator = ProtectoSimulator(SimulatorConfig(**_simulator_faults(args), quiet=True)).start()
    smtp = _start_smtp()
    redis_host, redis_port = _redis_address(args.redis)
    run = Run(
        args=args,
        var_dir=Path(tempfile.mkdtemp(prefix="chaos-")),
        redis_proxy=TcpProxy(redis_host, redis_port).start(),
        smtp_proxy=TcpProxy("127.0.0.1", smtp.port).start(),
    )
    smtp.handler.run = run
    try:
        _prepare(run, simulator.url, simulator.config.token, database)
        ids = _track(args.scans, simulator)
        _start_processes(run)
        _play(run, simulator)
        ok = _report(run, simulator, ids)
    finally:
        _stop_processes(run)
        run.redis_proxy.stop()
        run.smtp_proxy.stop()
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
    parser.add_argument("--cut", type=float, default=15.0, help="seconds the broker's connections are cut")
    parser.add_argument("--no-kill", action="store_true", help="do not kill the workers mid-batch")
    parser.add_argument("--small", action="store_true", help="CI size: 60 scans, 15 s outage, 8 s cut")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    args = parser.parse_args()
    if args.small:
        args.scans, args.outage, args.cut, args.timeout = 60, 15.0, 8.0, 240.0
    return args


def _redis_address(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def _proxied_redis_url(run: Run) -> str:
    from urllib.parse import urlsplit

    path = urlsplit(run.args.redis).path or "/0"
    return f"redis://127.0.0.1:{run.redis_proxy.port}{path}"


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
    """An SMTP handler that keeps every message it receives (on the run, once the run exists)."""

    run: Run | None = None

    async def handle_DATA(self, server, session, envelope):
        from email import message_from_bytes, policy

        self.run.mails.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"


def _start_smtp():
    from aiosmtpd.controller import Controller

    from tests.ports import free_port

    port = free_port()
    controller = Controller(_Inbox(), hostname="127.0.0.1", port=port)
    controller.start()
    controller.port = port
    return controller


def _prepare(run: Run, api_url: str, token: str, database: tuple[str, str] | None) -> None:
    """The environment every process of the run shares, then Django in this process, migrated."""
    import redis

    redis.Redis.from_url(run.args.redis).flushdb()
    (run.var_dir / "celery-queue" / "control").mkdir(parents=True)
    run.env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "PROTECTO_", "EMAIL_"))},
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "VAR_DIR": str(run.var_dir),
        "SECRET_KEY": secrets.token_urlsafe(40),
        "REDIS_URL": _proxied_redis_url(run),
        "BROKER_SOCKET_TIMEOUT_SECONDS": "5",
        "BROKER_HEALTH_CHECK_SECONDS": "5",
        "PROTECTO_API_URL": api_url,
        "PROTECTO_AUTH_TOKEN": token,
        # Several batches per cycle even in the small run, so a killed worker freezes one batch, not every scan.
        "PROTECTO_BATCH_SIZE": str(max(10, min(50, run.args.scans // 20))),
        "PROTECTO_TIMEOUT_SECONDS": "2",
        "PROTECTO_DEADLINE_SECONDS": "5",
        "PROTECTO_MAX_RETRIES": "1",
        "PROTECTO_BACKOFF_SECONDS": "0.1",
        "REFRESH_INTERVAL_SECONDS": str(INTERVAL_SECONDS),
        "WATCHDOG_INTERVAL_SECONDS": "5",
        "ALERT_EMAILS": ALERT_ADDRESS,
        "ALERT_API_DOWN_AFTER": "3",
        "ALERT_DIGEST_THRESHOLD": "1000000",  # one mail per failure, so each can be counted
        "STUCK_PENDING_MINUTES": "600",
        "STUCK_RUNNING_MINUTES": "600",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(run.smtp_proxy.port),
        "EMAIL_TIMEOUT_SECONDS": "5",
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


def _spawn(run: Run, *command: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT,
        env=run.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _celery(run: Run, *command: str) -> subprocess.Popen:
    return _spawn(run, "-m", "celery", "-A", "dashboard", *command, "--loglevel", "WARNING")


def _start_workers(run: Run) -> None:
    for n in range(run.args.workers):
        run.workers.append(_celery(run, "worker", "--pool", "solo", "-n", f"chaos{n}-{time.time_ns()}@%h"))


def _start_processes(run: Run) -> None:
    _start_workers(run)
    run.others.append(_celery(run, "beat", "--schedule", str(run.var_dir / "celerybeat-schedule")))
    run.others.append(_spawn(run, "manage.py", "watchdog"))


def _play(run: Run, simulator) -> None:
    """The scenario of the module docstring, then wait until everything has settled."""
    start = time.monotonic()
    run.smtp_proxy.refuse()
    _wait(run, start, lambda: _refresh_runs() >= 5, "five refresh cycles")
    simulator.configure(error_rate=1.0)
    outage_ends = time.monotonic() + run.args.outage
    # During the outage batches stay claimed through their retries: the surest moment to catch one.
    watcher = None if run.args.no_kill else _kill_workers_mid_batch(run, start)
    time.sleep(max(0.0, outage_ends - time.monotonic()))
    simulator.configure(error_rate=_simulator_faults(run.args)["error_rate"])
    _bring_smtp_back(run, start)
    _cut_broker(run, start)
    _settled_for_good(run, start)
    if watcher:
        watcher.join(timeout=max(1.0, run.args.timeout - (time.monotonic() - start)))
    run.elapsed = time.monotonic() - start


def _bring_smtp_back(run: Run, start: float) -> None:
    """Let the mail server answer again and time how long the alerts that waited for it take to go out."""
    from scans.models import Alert

    waiting = set(Alert.objects.filter(state=Alert.State.PENDING).values_list("pk", flat=True))
    run.alerts_held_by_smtp = len(waiting)
    run.smtp_proxy.heal()
    back_at = time.monotonic()
    _wait(
        run,
        start,
        lambda: not Alert.objects.filter(pk__in=waiting, state=Alert.State.PENDING).exists(),
        "the alerts held back by the mail server",
    )
    run.smtp_recovery_seconds = time.monotonic() - back_at


def _kill_workers_mid_batch(run: Run, start: float) -> threading.Thread:
    """SIGKILL every worker while a batch is claimed, start new ones; a thread times how long the batch waits."""
    from scans.models import ScanPoll

    _wait(run, start, lambda: ScanPoll.objects.exclude(claim_token="").exists(), "a claimed batch")
    killed_tokens = set(ScanPoll.objects.exclude(claim_token="").values_list("claim_token", flat=True))
    killed_at = time.monotonic()
    for worker in run.workers:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    run.workers.clear()
    _start_workers(run)

    def watch() -> None:
        from django.db import connection

        try:
            while ScanPoll.objects.filter(claim_token__in=killed_tokens).exists():
                if time.monotonic() - start > run.args.timeout:
                    return
                time.sleep(0.2)
            run.frozen_seconds = time.monotonic() - killed_at
        finally:
            connection.close()

    watcher = threading.Thread(target=watch, name="thaw-watcher", daemon=True)
    watcher.start()
    return watcher


def _cut_broker(run: Run, start: float) -> None:
    """Drop the broker's connections without a word, restore the network, time until cycles complete again."""
    from django.utils import timezone

    from scans.models import RefreshRun

    run.redis_proxy.sever_silently()
    time.sleep(run.args.cut)
    run.redis_proxy.heal()
    back_at, back_stamp = time.monotonic(), timezone.now()

    def cycling() -> bool:
        finished = RefreshRun.objects.filter(started_at__gt=back_stamp).exclude(outcome=RefreshRun.Outcome.RUNNING)
        return finished.exists()

    _wait(run, start, cycling, "a refresh cycle after the broker came back")
    run.broker_recovery_seconds = time.monotonic() - back_at


def _refresh_runs() -> int:
    from scans.models import RefreshRun

    return RefreshRun.objects.exclude(outcome=RefreshRun.Outcome.RUNNING).count()


def _settled() -> bool:
    """Every scan final, no cycle running, nothing waiting in the outbox, and the recovery mailed.

    A scan can turn final a moment before the alert check that follows its cycle has run, so the caller also asks
    that this stays true over a few intervals (see _settled_for_good).
    """
    from scans.models import Alert, RefreshRun, Scan

    if Scan.objects.active().exists() or RefreshRun.objects.filter(outcome=RefreshRun.Outcome.RUNNING).exists():
        return False
    if Alert.objects.filter(state=Alert.State.PENDING).exists():
        return False
    return Alert.objects.filter(kind=Alert.Kind.API_RECOVERED).exists()


def _settled_for_good(run: Run, start: float) -> None:
    """Wait until _settled() holds, and still holds three intervals later (alert checks run every interval)."""
    while True:
        _wait(run, start, _settled, "every scan final, every alert sent and the recovery mailed")
        time.sleep(3 * INTERVAL_SECONDS)
        if _settled():
            return


def _snapshot() -> str:
    """What the run looks like now, for a give-up message."""
    from scans.models import Alert, RefreshRun, Scan

    active = Counter(Scan.objects.active().values_list("status", flat=True))
    alerts = Counter(Alert.objects.values_list("kind", "state"))
    runs = [f"{run.started_at:%H:%M:%S} {run.outcome}" for run in RefreshRun.objects.order_by("started_at")]
    return f"active scans {dict(active)}, alerts {dict(alerts)}, cycles: {', '.join(runs)}"


def _wait(run: Run, start: float, condition, what: str) -> None:
    from django.db import close_old_connections

    while not condition():
        if time.monotonic() - start > run.args.timeout:
            raise SystemExit(f"chaos: gave up after {run.args.timeout:.0f} s waiting for {what}; {_snapshot()}")
        for process in [*run.workers, *run.others]:
            if process.poll() is not None:
                raise SystemExit(f"chaos: {process.args[1:4]} exited with status {process.returncode}")
        time.sleep(0.5)
        close_old_connections()


def _stop_processes(run: Run) -> None:
    processes = [*run.workers, *run.others]
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _report(run: Run, simulator, ids: list[str]) -> bool:
    """Print the table and return whether every check passed."""
    from django.db.models import Count

    from scans.models import Alert, RefreshRun, Scan, StatusChange

    truth = {tracking_id: simulator.scan_status(tracking_id).strip().upper() for tracking_id in ids}
    stored = dict(Scan.objects.values_list("tracking_id", "status"))
    matching = sum(stored.get(tracking_id) == status for tracking_id, status in truth.items())
    doubled = StatusChange.objects.values("scan", "to_status").annotate(n=Count("pk")).filter(n__gt=1).count()
    by_kind = Counter(mail["X-Scan-Alert-Kind"] for mail in run.mails)
    failed_ids = [tracking_id for tracking_id, status in truth.items() if status == "FAILED"]
    per_failure = _mails_per_scan(run.mails, failed_ids)
    outcomes = Counter(RefreshRun.objects.values_list("outcome", flat=True))
    recovery = run.broker_recovery_seconds
    checks = {
        "statuses matching the API's truth": (f"{matching} / {len(ids)}", matching == len(ids)),
        "transitions recorded twice": (doubled, doubled == 0),
        "failed scans mailed exactly once": (
            f"{sum(n == 1 for n in per_failure.values())} / {len(failed_ids)}",
            all(n == 1 for n in per_failure.values()),
        ),
        "'API down' mails": (by_kind["api_down"], by_kind["api_down"] == 1),
        "'API recovered' mails": (by_kind["api_recovered"], by_kind["api_recovered"] == 1),
        # One episode per silence (the broker cut, maybe a slow worker restart): each told once and ended once.
        "'refresh stopped' / 'resumed' mails": (
            f"{by_kind['poller_stale']} / {by_kind['poller_recovered']}",
            by_kind["poller_stale"] >= 1 and by_kind["poller_stale"] == by_kind["poller_recovered"],
        ),
        "cycles resumed after the broker cut": (
            f"{recovery:.0f} s",
            recovery is not None and recovery <= BROKER_RECOVERY_LIMIT_SECONDS,
        ),
    }
    _print_table(run, checks, outcomes, by_kind)
    misses = {tracking_id: n for tracking_id, n in per_failure.items() if n != 1}
    if misses:
        alerts = Counter(
            Alert.objects.filter(scan__tracking_id__in=misses, kind=Alert.Kind.FAILED).values_list(
                "state", flat=True
            )
        )
        print(
            f"failed scans not mailed exactly once (mails: count): {dict(Counter(misses.values()))}; "
            f"their failure alerts by state: {dict(alerts)}; e.g. {sorted(misses)[:3]}"
        )
    return all(ok for _, ok in checks.values())


def _mails_per_scan(mails: list, tracking_ids: list[str]) -> dict[str, int]:
    bodies = [mail.get_body(("plain",)).get_content() for mail in mails if mail["X-Scan-Alert-Kind"] == "failed"]
    counts = dict.fromkeys(tracking_ids, 0)
    for body in bodies:
        for tracking_id in tracking_ids:
            if tracking_id in body:
                counts[tracking_id] += 1
    return counts


def _print_table(run: Run, checks: dict, outcomes: Counter, by_kind: Counter) -> None:
    from django.db import connection

    args = run.args
    print(
        f"\nchaos run: {args.scans} scans, {args.workers} workers, {connection.vendor}, "
        f"API outage {args.outage:.0f} s, broker cut {args.cut:.0f} s"
    )
    print(f"settled in {run.elapsed:.0f} s; refresh cycles by outcome: {dict(outcomes)}")
    print(f"mails by kind: {dict(by_kind)}")
    frozen = "not killed" if run.args.no_kill else f"{run.frozen_seconds or float('nan'):.0f} s"
    print(f"{'a killed batch stayed claimed for':<40} {frozen}")
    print(
        f"{'mail server back -> held alerts sent':<40} {run.smtp_recovery_seconds:.1f} s "
        f"({run.alerts_held_by_smtp} alerts had waited)"
    )
    for name, (value, ok) in checks.items():
        print(f"{name:<40} {value!s:<14} {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    sys.exit(main())
