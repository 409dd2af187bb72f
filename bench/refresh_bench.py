"""Refresh throughput with the fan-out on Celery: one worker against two, on PostgreSQL and Redis.

    .venv/bin/python bench/refresh_bench.py --scans 20000
    .venv/bin/python bench/refresh_bench.py --scans 100000 --latency 0.1 --redis redis://127.0.0.1:6379/1

A throw-away PostgreSQL database is created next to --postgres (and dropped at the end); the --redis database is
flushed first, so give one nothing else uses. The simulator runs in this process with --latency seconds added to
every answer; every scan is pinned IN-PROGRESS, and before each measured cycle --changed-percent of them get a new
start time, so that share of each poll is news and the rest is unchanged. Worker processes (prefork, --concurrency
each) poll; no beat runs: this script sends each tick itself once every scan is due. Before each cycle it runs
VACUUM ANALYZE on the tables a cycle writes, as autovacuum would (this machine's PostgreSQL has it off).

Printed: scans polled per second with one worker, then with two (same run, same data), and the ratio two/one;
WAL bytes per cycle (pg_current_wal_lsn: cluster-wide, so other work on the same server adds to it); the total
size of the scans table and of the poll table (scans_scanpoll) after each cycle of unchanged polls; and the
milliseconds and SQL statements of database work for one batch of unchanged scans (claim, load, write, run
counts; the HTTP request excluded), median of --db-batches: time inside database calls, and apart from it the
Python time of judging the answers and building rows. Each cycle's line also gives the CPU seconds it took, by
part (the workers, this process with the simulator, PostgreSQL, Redis): where they add up to the machine's cores,
the CPU, not the API, is the bottleneck.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throwaway_db import create_postgres_database, drop_postgres_database  # noqa: E402

# Recent, so no scan is stuck (a stuck-alert storm is not what this measures); fixed for the whole run.
SUBMITTED = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=100_000, help="active scans (default 100,000)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the simulator adds to every answer")
    parser.add_argument("--changed-percent", type=int, default=20, help="share of scans with news per cycle")
    parser.add_argument("--concurrency", type=int, default=4, help="processes per worker")
    parser.add_argument("--in-flight", type=int, default=8, help="REFRESH_MAX_BATCHES_IN_FLIGHT")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--interval", type=int, default=60, help="REFRESH_INTERVAL_SECONDS (each cycle waits it)")
    parser.add_argument("--unchanged-cycles", type=int, default=3, help="cycles of unchanged polls for growth")
    parser.add_argument("--db-batches", type=int, default=20, help="unchanged batches timed in-process")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/1")
    return parser.parse_args()


def setup(args: argparse.Namespace, database_url: str, var_dir: Path, simulator) -> dict:
    """Environment for this process and the workers; Django set up and migrated here."""
    import redis

    redis.Redis.from_url(args.redis).flushdb()
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DATABASE_", "PROTECTO_", "REFRESH_", "DASHBOARD_", "DEMO_", "DEBUG"))
        },
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "VAR_DIR": str(var_dir),
        "SECRET_KEY": secrets.token_urlsafe(40),
        "DATABASE_URL": database_url,
        "REDIS_URL": args.redis,
        "PROTECTO_API_URL": simulator.url,
        "PROTECTO_AUTH_TOKEN": simulator.config.token,
        "PROTECTO_BATCH_SIZE": str(args.batch_size),
        "REFRESH_INTERVAL_SECONDS": str(args.interval),
        "REFRESH_MAX_INTERVAL_SECONDS": str(args.interval),
        "REFRESH_MAX_BATCHES_IN_FLIGHT": str(args.in_flight),
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return env


def track(count: int, simulator) -> list[str]:
    """Pin `count` IN-PROGRESS scans in the simulator and track them (due now)."""
    from scans.services import scans_track

    ids = [f"bench-{n:07d}" for n in range(count)]
    for tracking_id in ids:
        simulator.add_scan(
            tracking_id, status="IN-PROGRESS", submitted_at=SUBMITTED, started_at=SUBMITTED + timedelta(minutes=1)
        )
    for start in range(0, count, 5000):
        scans_track(ids=ids[start : start + 5000])
    return ids


def change_some(ids: list[str], percent: int, cycle: int, simulator) -> None:
    """Give `percent` of the scans news for the next poll: a new start time, the status unchanged."""
    step = max(1, round(100 / percent)) if percent else 0
    for tracking_id in ids[cycle % step :: step] if step else []:
        simulator.add_scan(
            tracking_id,
            status="IN-PROGRESS",
            submitted_at=SUBMITTED,
            started_at=SUBMITTED + timedelta(minutes=1 + cycle),
        )


def start_worker(env: dict, name: str, concurrency: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "-n", f"{name}@%h"]
    command += ["--concurrency", str(concurrency), "--without-mingle", "--without-gossip", "--loglevel", "WARNING"]
    with log.open("w") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_worker(worker: subprocess.Popen) -> None:
    os.killpg(worker.pid, signal.SIGTERM)  # warm shutdown: the batch in hand is finished first
    worker.wait(timeout=120)


def wait_until_all_due() -> None:
    """Sleep until every active scan's next check has come (no hand-made update: it would bloat the table)."""
    from django.db.models import Max
    from django.utils import timezone

    from scans.models import Scan

    latest = Scan.objects.active().aggregate(latest=Max("poll__next_check_at"))["latest"]
    if latest:
        time.sleep(max(0.0, (latest - timezone.now()).total_seconds() + 0.5))


def wal_lsn() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
        return int(cursor.fetchone()[0])


def table_bytes(table: str) -> int:
    """The table's size with its indexes and TOAST."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size(%s)", [table])
        return int(cursor.fetchone()[0])


def row_updates(table: str) -> tuple[int, int]:
    """(row updates, of which HOT) on the table so far: this database only, unlike the WAL position."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = %s", [table])
        updated, hot = cursor.fetchone()
        return int(updated), int(hot)


def vacuum() -> None:
    """What autovacuum would do between cycles (this machine's PostgreSQL runs with autovacuum off): reclaim the
    dead row versions of the last cycle and refresh the planner's statistics. Not timed."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE scans_scan, scans_scanpoll, scans_statuschange, scans_refreshrun")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(workers: list[subprocess.Popen]) -> dict[str, float]:
    """CPU seconds used so far (user + system), by part: the worker processes, this process (the simulator and
    the bench), PostgreSQL's processes (cluster-wide, so other work on the server adds to it) and Redis. Read
    from /proc: Linux only, and PostgreSQL and Redis only when they run on this machine."""
    groups = {worker.pid for worker in workers}
    totals = {"workers": 0.0, "simulator": 0.0, "postgres": 0.0, "redis": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        pid, group, used = int(entry.name), int(fields[2]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        if group in groups:
            totals["workers"] += used
        elif pid == os.getpid():
            totals["simulator"] += used
        elif name.startswith("postgres"):
            # With the reaped backends' time: a connection closed during the cycle takes its process with it.
            totals["postgres"] += used + (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
        elif name.startswith("redis"):
            totals["redis"] += used
    return totals


def cycle(label: str, workers: list[subprocess.Popen]) -> dict:
    """Send one tick, wait for its run (and any later one) to close; return what it did."""
    from dashboard.celery import app
    from scans.models import RefreshRun

    vacuum()
    wait_until_all_due()
    wal_before = wal_lsn()
    size_before, poll_before = table_bytes("scans_scan"), table_bytes("scans_scanpoll")
    updates_before = row_updates("scans_scan")
    last = RefreshRun.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    cpu_before = cpu_seconds(workers)
    started = time.monotonic()
    app.send_task("scans.tasks.refresh_due_scans")
    while True:
        runs = RefreshRun.objects.filter(pk__gt=last)
        if runs.exists() and not runs.filter(outcome="running").exists():
            break
        time.sleep(0.05)
    seconds = time.monotonic() - started
    cpu = {part: used - cpu_before[part] for part, used in cpu_seconds(workers).items()}
    asked = sum(runs.values_list("ids_asked", flat=True))
    result = {
        "label": label,
        "asked": asked,
        "changed": sum(runs.values_list("changed", flat=True)),
        "seconds": seconds,
        "per_second": asked / seconds,
        "wal": wal_lsn() - wal_before,
        "size_before": size_before,
        "size_after": table_bytes("scans_scan"),
        "poll_before": poll_before,
        "poll_after": table_bytes("scans_scanpoll"),
        "outcomes": list(runs.values_list("outcome", flat=True)),
        "cpu": cpu,
    }
    time.sleep(1)  # table statistics are reported by each backend when it goes idle
    after = row_updates("scans_scan")
    updated, hot = (now - before for now, before in zip(after, updates_before, strict=True))
    print(
        f"{label:<22} polled {asked:>7} (changed {result['changed']:>6}) in {seconds:6.1f} s = "
        f"{result['per_second']:7.0f} scans/s; WAL {result['wal'] / 1e6:7.1f} MB; "
        f"scans table {size_before / 1e6:6.1f} -> {result['size_after'] / 1e6:6.1f} MB, "
        f"{updated} row updates ({hot} HOT); poll table {poll_before / 1e6:5.1f} -> "
        f"{result['poll_after'] / 1e6:5.1f} MB; runs {result['outcomes']}; CPU s "
        + ", ".join(f"{part} {used:.1f}" for part, used in cpu.items()),
        flush=True,
    )
    return result


@dataclass
class BatchCost:
    """Medians over the timed batches of unchanged scans, in ms (and statements)."""

    claim_ms: float  # claiming the batch: all of it is database work
    database_ms: float  # load + write + run counts: time inside the database calls
    python_ms: float  # the rest of load + write + run counts: judging the answer, building rows
    statements: int  # of load + write + run counts


def db_ms_per_unchanged_batch(count: int) -> BatchCost:
    """What one batch of unchanged scans costs besides the HTTP request, median of `count` batches."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from scans import refresh
    from scans.models import RefreshRun, Scan
    from scans.refresh_write import write_batch

    in_database = [0.0]

    def timed(execute, sql, params, many, context):
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            in_database[0] += time.perf_counter() - began

    wait_until_all_due()
    client = refresh.worker_client()
    run = RefreshRun.objects.create()
    lease = refresh.claim_lease(client)
    claims, database, totals, statements = [], [], [], []
    for _ in range(count):
        now = timezone.now()
        began = time.perf_counter()
        token, _claimed = refresh._claim_batch(run_id=run.pk, now=now, size=client.batch_size, lease=lease)
        claims.append(time.perf_counter() - began)
        ids = list(Scan.objects.filter(poll__claim_token=token).values_list("tracking_id", flat=True))
        reports = client.fetch_status_batch(ids)  # not timed: the API's share
        in_database[0] = 0.0
        with CaptureQueriesContext(connection) as queries, connection.execute_wrapper(timed):
            began = time.perf_counter()
            scans = list(Scan.objects.filter(poll__claim_token=token).select_related("poll").order_by("pk"))
            tick = RefreshRun.objects.filter(pk=run.pk).values_list("started_at", flat=True).first()
            written = write_batch(token=token, scans=scans, reports=reports, now=now, schedule_from=min(tick, now))
            refresh._add_to_run(refresh.BatchResult(run_id=run.pk, token=token, asked=len(scans)))
            totals.append(time.perf_counter() - began)
        database.append(in_database[0])
        statements.append(len(queries))
        assert not written.plan.changed, "the timed batches must be unchanged"
    python = [total - db for total, db in zip(totals, database, strict=True)]
    return BatchCost(
        claim_ms=statistics.median(claims) * 1000,
        database_ms=statistics.median(database) * 1000,
        python_ms=statistics.median(python) * 1000,
        statements=int(statistics.median(statements)),
    )


def main() -> int:
    args = parse_args()
    from demo.simulator import ProtectoSimulator, SimulatorConfig

    var_dir = Path(tempfile.mkdtemp(prefix="refresh-bench-"))
    (var_dir / "celery-queue" / "control").mkdir(parents=True)
    name, url = create_postgres_database(args.postgres, "refresh_bench")
    simulator = ProtectoSimulator(SimulatorConfig(seed=1, quiet=True, latency=args.latency)).start()
    workers: list[subprocess.Popen] = []
    try:
        env = setup(args, url, var_dir, simulator)
        began = time.monotonic()
        ids = track(args.scans, simulator)
        print(
            f"{args.scans} active scans tracked in {time.monotonic() - began:.0f} s; simulator latency "
            f"{args.latency * 1000:.0f} ms; batches of {args.batch_size}, {args.in_flight} in flight; "
            f"workers of concurrency {args.concurrency}; {args.changed_percent}% changed per measured cycle",
            flush=True,
        )
        workers.append(start_worker(env, "bench1", args.concurrency, var_dir / "worker1.log"))
        workers.append(start_worker(env, "bench2", args.concurrency, var_dir / "worker2.log"))
        time.sleep(5)  # the workers connect to the broker
        cycle("first poll (all new)", workers)  # every scan changes: both workers, not measured
        stop_worker(workers.pop())
        change_some(ids, args.changed_percent, 1, simulator)
        one = cycle("one worker", workers)
        workers.append(start_worker(env, "bench2", args.concurrency, var_dir / "worker2.log"))
        time.sleep(5)
        change_some(ids, args.changed_percent, 2, simulator)
        two = cycle("two workers", workers)
        unchanged = [cycle(f"unchanged cycle {n}", workers) for n in range(1, args.unchanged_cycles + 1)]
        while workers:
            stop_worker(workers.pop())
        cost = db_ms_per_unchanged_batch(args.db_batches)
        print()
        print(
            f"scans polled per second: one worker {one['per_second']:.0f}, two workers {two['per_second']:.0f}, "
            f"ratio two/one {two['per_second'] / one['per_second']:.2f}"
        )
        print(f"all {two['asked']} polled by two workers in {two['seconds']:.1f} s (interval {args.interval} s)")
        print(
            f"DB work per batch of {args.batch_size} unchanged scans (median of {args.db_batches}): claim "
            f"{cost.claim_ms:.1f} ms + load/write/run counts {cost.database_ms:.1f} ms = "
            f"{cost.claim_ms + cost.database_ms:.1f} ms in {cost.statements} + 2 SQL statements; "
            f"judging the answer and building rows in Python: {cost.python_ms:.1f} ms more"
        )
        print(
            "WAL per cycle (MB): "
            + ", ".join(f"{c['label']} {c['wal'] / 1e6:.1f}" for c in [one, two, *unchanged])
        )
        sizes = [unchanged[0]["size_before"], *(c["size_after"] for c in unchanged)]
        print("scans table across unchanged cycles (MB): " + " -> ".join(f"{s / 1e6:.1f}" for s in sizes))
        polls = [unchanged[0]["poll_before"], *(c["poll_after"] for c in unchanged)]
        print("poll table across unchanged cycles (MB): " + " -> ".join(f"{s / 1e6:.1f}" for s in polls))
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGKILL)
        simulator.stop()
        drop_postgres_database(args.postgres, name)
        shutil.rmtree(var_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
