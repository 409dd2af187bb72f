"""Worker memory with a million tracked scans: the RSS of the Celery worker's processes and of beat over a few
refresh cycles, against the target "worker RSS with 1,000,000 tracked scans under 150 MB".

    .venv/bin/python bench/worker_memory.py                                  # 1,000,000 scans, 5 minutes
    .venv/bin/python bench/worker_memory.py --scans 300000 --minutes 3 --redis redis://127.0.0.1:6379/3

A throw-away PostgreSQL database is created next to --postgres (and dropped at the end); the --redis database is
flushed first, so give one nothing else uses. It is filled with --scans scans as the poller would have left them
(rows made by bench/dashboard_bench.py's _scan): --active of them IN-PROGRESS, the rest SUCCESS or FAILED (about
2% of those archived). The database's trigger gives each scan its poll row: the active ones due now, the final
ones never. The simulator runs in this process (on --port) with --latency seconds added to every answer, the
active scans pinned IN-PROGRESS there, so every cycle polls all of them. One worker (prefork, --concurrency) and
Celery beat run as in production (REFRESH_INTERVAL_SECONDS and REFRESH_MAX_INTERVAL_SECONDS both --interval, so
each active scan is polled every cycle) for --minutes; ALERT_EMAILS is set (console mail, in the worker's log)
and ARCHIVE_FINISHED_AFTER_DAYS is --archive-after-days, so that the retention task sent once a third of the way
in (beat's is hourly) has finished scans to archive; the alert task is sent with it (beat also sends it every
interval).

Printed: how long the fill took and what is in the database; each refresh cycle (IDs asked, changed, seconds,
outcome) and the count per outcome; what retention and alerting left behind; then per process (worker main,
each pool child, beat) the RSS sampled every second from /proc/<pid>/status: at the start (workers booted, no
task yet), median, max and the second of the max, and the kernel's peak (VmHWM) at the last sample; the
worker's total PSS (shared pages split between its processes, from /proc/<pid>/smaps_rollup); how much each pool
child grew while running which task (the worker is asked `inspect active` each second, so a task shorter than a
second may go unseen); and whether every worker process stayed under --limit-mb. MB here is 10^6 bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throwaway_db import create_postgres_database, drop_postgres_database  # noqa: E402

FILL_CHUNK = 50_000
FAILED_SHARE = 0.12 / 0.87  # dashboard_bench's mix among final scans: 75% SUCCESS, 12% FAILED


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=1_000_000, help="tracked scans (default 1,000,000)")
    parser.add_argument("--active", type=int, default=10_000, help="of which IN-PROGRESS, polled every cycle")
    parser.add_argument("--minutes", type=float, default=5.0, help="how long worker and beat run, measured")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the simulator adds to every answer")
    parser.add_argument("--concurrency", type=int, default=4, help="worker pool processes")
    parser.add_argument("--interval", type=int, default=30, help="REFRESH_(MAX_)INTERVAL_SECONDS")
    parser.add_argument("--in-flight", type=int, default=8, help="REFRESH_MAX_BATCHES_IN_FLIGHT")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--archive-after-days", type=int, default=7, help="ARCHIVE_FINISHED_AFTER_DAYS (0: off)")
    parser.add_argument("--limit-mb", type=float, default=150.0, help="the target for each worker process")
    parser.add_argument("--port", type=int, default=18600, help="the simulator's port (0: any free one)")
    parser.add_argument("--var-dir", help="VAR_DIR to create and remove (default: a fresh temp dir)")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/3")
    return parser.parse_args()


def fill(total: int, active: int) -> list:
    """`total` scans, `active` of them IN-PROGRESS at random places, in chunks; return the active ones."""
    from django.utils import timezone

    from bench.dashboard_bench import _scan
    from scans.models import Scan

    rng = random.Random(20261201)
    now = timezone.now()
    active_at = set(rng.sample(range(total), active))
    actives = []
    for done in range(0, total, FILL_CHUNK):
        rows = []
        for n in range(done, min(done + FILL_CHUNK, total)):
            final = "FAILED" if rng.random() < FAILED_SHARE else "SUCCESS"
            status = "IN-PROGRESS" if n in active_at else final
            rows.append(_scan(rng, now, status))
        Scan.objects.bulk_create(rows, batch_size=5000)
        actives += [scan for scan in rows if scan.status == "IN-PROGRESS"]
        if (done + len(rows)) % 100_000 == 0 or done + len(rows) == total:
            print(f"  {done + len(rows)} scans", flush=True)
    return actives


def describe_database() -> str:
    from scans.models import Scan, ScanPoll

    return (
        f"{Scan.objects.count()} scans: {Scan.objects.active().count()} active, "
        f"{Scan.objects.filter(status='SUCCESS').count()} SUCCESS, {Scan.objects.filter(status='FAILED').count()} "
        f"FAILED, {Scan.objects.archived().count()} archived; "
        f"{ScanPoll.objects.filter(next_check_at__isnull=False).count()} poll rows with a next check"
    )


def start_beat(env: dict, var_dir: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "dashboard", "beat", "--loglevel", "WARNING"]
    command += ["--schedule", str(var_dir / "celerybeat-schedule")]
    with log.open("w") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def children(pid: int) -> list[int]:
    """The process's children, from every thread's children list."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return sorted(set(found))


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in kB ({} once it is gone)."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    except OSError:
        return {}
    return values


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler:
    """Each second: the RSS of the worker's main process, its pool children (new ones as they appear) and beat,
    the worker's total PSS, and the task each pool child is running (the worker's answer to `inspect active`)."""

    def __init__(self, worker: int, beat: int, app, destination: str) -> None:
        self.worker, self.beat = worker, beat
        self.app, self.destination = app, destination
        self.started = time.monotonic()
        self.seconds: list[float] = []
        self.rss: list[dict[str, int]] = []
        self.tasks: list[dict[str, str]] = []
        self.hwm: dict[str, int] = {}
        self.worker_pss: list[int] = []

    def running(self) -> dict[int, str]:
        """{pool child pid: short name of the task it runs}; {} when the worker does not answer in time."""
        try:
            inspect = self.app.control.inspect(destination=[self.destination], timeout=0.5)
            active = (inspect.active() or {}).get(self.destination, [])
        except Exception:  # a missed answer only loses the attribution of one second
            return {}
        return {task["worker_pid"]: task["name"].rsplit(".", 1)[-1] for task in active}

    def sample(self) -> None:
        pool = children(self.worker)
        processes = {"worker main": self.worker, "beat": self.beat}
        processes.update({f"worker child {pid}": pid for pid in pool})
        rss = {}
        for name, pid in processes.items():
            values = status_kb(pid)
            if values:
                rss[name] = values["VmRSS"]
                self.hwm[name] = values["VmHWM"]
        self.seconds.append(time.monotonic() - self.started)
        self.rss.append(rss)
        self.worker_pss.append(sum(pss_kb(pid) for pid in [self.worker, *pool]))
        self.tasks.append({f"worker child {pid}": task for pid, task in self.running().items()})

    def series(self, name: str) -> list[tuple[float, int]]:
        return [(second, rss[name]) for second, rss in zip(self.seconds, self.rss, strict=True) if name in rss]

    def growth_by_task(self, name: str) -> Counter:
        """kB the process grew by, summed over the seconds it grew, by the task it ran at either end of each."""
        growth: Counter = Counter()
        for n in range(1, len(self.rss)):
            before, after = self.rss[n - 1].get(name), self.rss[n].get(name)
            if before is None or after is None or after <= before:
                continue
            tasks = {self.tasks[n - 1].get(name), self.tasks[n].get(name)} - {None}
            growth[" + ".join(sorted(tasks)) or "(no task seen)"] += after - before
        return growth


def mb(kb: float) -> float:
    return kb * 1024 / 1e6


def print_runs(since) -> None:
    from scans.models import RefreshRun

    runs = list(RefreshRun.objects.filter(started_at__gte=since).order_by("pk"))
    done = [run for run in runs if run.outcome != RefreshRun.Outcome.RUNNING]
    print(f"\nrefresh cycles: {len(runs)} started, {len(done)} completed")
    for run in runs:
        seconds = (run.finished_at - run.started_at).total_seconds() if run.finished_at else float("nan")
        print(
            f"  {run.started_at:%H:%M:%S}  asked {run.ids_asked:>6}  answered {run.ids_answered:>6}  "
            f"changed {run.changed:>6}  {run.api_calls:>4} API calls  {seconds:5.1f} s  {run.outcome}"
        )
    outcomes = Counter(run.outcome for run in done)
    print("outcomes: " + (", ".join(f"{outcome} {count}" for outcome, count in outcomes.most_common()) or "none"))


def print_alerts() -> None:
    from scans.models import Alert

    alerts = Counter(Alert.objects.values_list("kind", "state"))
    shown = ", ".join(f"{kind}/{state} {count}" for (kind, state), count in sorted(alerts.items()))
    print(f"alerts (kind/state): {shown or 'none'}")


def print_memory(sampler: Sampler, limit_mb: float) -> bool:
    """The table per process, the growth by task and the verdict; True when every worker process stayed under."""
    names = sorted({name for rss in sampler.rss for name in rss}, key=lambda name: (name != "worker main", name))
    print(f"\nRSS sampled every second ({len(sampler.rss)} samples), MB; 'at' is the second of the max")
    head = f"{'process':<20} {'samples':>7} {'start':>7} {'median':>7} {'max':>7} {'at':>5} {'VmHWM':>7}"
    print(head)
    print("-" * len(head))
    worker_max: list[tuple[float, float, str]] = []
    for name in names:
        series = sampler.series(name)
        values = [rss for _, rss in series]
        at, peak_kb = max(series, key=lambda point: (point[1], -point[0]))
        peak = mb(peak_kb)
        print(
            f"{name:<20} {len(values):>7} {mb(values[0]):>7.1f} {mb(statistics.median(values)):>7.1f} "
            f"{peak:>7.1f} {at:>5.0f} {mb(sampler.hwm[name]):>7.1f}"
        )
        if name.startswith("worker"):
            worker_max.append((peak, mb(sampler.hwm[name]), name))
    pss = sampler.worker_pss
    print(
        f"worker total PSS (main + children): start {mb(pss[0]):.1f}, median {mb(statistics.median(pss)):.1f}, "
        f"max {mb(max(pss)):.1f} MB"
    )
    print("\nRSS growth of each pool child by the task it was running (MB, summed over the seconds it grew)")
    for name in names:
        if name.startswith("worker child"):
            growth = sampler.growth_by_task(name)
            shown = ", ".join(f"{task} +{mb(kb):.1f}" for task, kb in growth.most_common())
            print(f"  {name}: {shown or 'no growth'}")
    peak, _, name = max(worker_max)
    hwm, _, hwm_name = max((hwm, peak, name) for peak, hwm, name in worker_max)
    under = peak < limit_mb
    print(
        f"\nmax sampled RSS of any worker process: {peak:.1f} MB ({name}): "
        f"{'under' if under else 'NOT under'} {limit_mb:.0f} MB"
    )
    print(
        f"max kernel peak (VmHWM) of any worker process: {hwm:.1f} MB ({hwm_name}): "
        f"{'under' if hwm < limit_mb else 'NOT under'} {limit_mb:.0f} MB"
    )
    return under and hwm < limit_mb


def stop(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM to the process group (a worker finishes the task in hand), SIGKILL if it does not end in time."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main() -> int:
    args = parse_args()
    from bench.refresh_bench import setup, start_worker
    from demo.simulator import ProtectoSimulator, SimulatorConfig

    if args.var_dir:
        var_dir = Path(args.var_dir)
        var_dir.mkdir(parents=True)
    else:
        var_dir = Path(tempfile.mkdtemp(prefix="worker-memory-"))
    name, url = create_postgres_database(args.postgres, "worker_memory")
    simulator = ProtectoSimulator(SimulatorConfig(seed=1, quiet=True, latency=args.latency)).start(port=args.port)
    processes: list[subprocess.Popen] = []
    try:
        env = setup(args, url, var_dir, simulator)
        env.update(ALERT_EMAILS="ops@example.com", ARCHIVE_FINISHED_AFTER_DAYS=str(args.archive_after_days))
        from django.db import connection
        from django.utils import timezone

        from dashboard.celery import app
        from scans.models import Scan

        began = time.monotonic()
        actives = fill(args.scans, args.active)
        filled = time.monotonic() - began
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")  # what autovacuum would have done by now
        vacuumed = time.monotonic() - began - filled
        print(
            f"filled {args.scans} scans in {filled:.0f} s (and VACUUM ANALYZE in {vacuumed:.0f} s): "
            f"{describe_database()}",
            flush=True,
        )
        for scan in actives:
            simulator.add_scan(
                scan.tracking_id, status="IN-PROGRESS", submitted_at=scan.submitted_at, started_at=scan.started_at
            )
        print(
            f"{len(actives)} active scans pinned IN-PROGRESS in the simulator (latency "
            f"{args.latency * 1000:.0f} ms); one worker of concurrency {args.concurrency} and beat, interval "
            f"{args.interval} s, batches of "
            f"{args.batch_size}, {args.in_flight} in flight; {args.minutes:g} minutes",
            flush=True,
        )

        since = timezone.now()
        worker = start_worker(env, "memory", args.concurrency, var_dir / "worker.log")
        processes.append(worker)
        beat = start_beat(env, var_dir, var_dir / "beat.log")
        processes.append(beat)
        deadline = time.monotonic() + 60
        while len(children(worker.pid)) < args.concurrency:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"the worker did not start; see {var_dir / 'worker.log'}")
            time.sleep(0.2)
        time.sleep(2)  # the pool children finish importing

        sampler = Sampler(worker.pid, beat.pid, app, f"memory@{socket.gethostname()}")
        start = sampler.started
        end = start + args.minutes * 60
        housekeeping_at = start + args.minutes * 60 / 3
        archived_before = None
        while time.monotonic() < end:
            tick = time.monotonic()
            sampler.sample()
            if archived_before is None and tick >= housekeeping_at:
                archived_before = Scan.objects.archived().count()
                app.send_task("scans.tasks.purge_history")
                app.send_task("scans.tasks.send_alerts")
                print(f"retention and alert tasks sent at {tick - start:.0f} s", flush=True)
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[5]} exited with {process.returncode}; see {var_dir}")
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))

        stop(beat, timeout=30)
        stop(worker, timeout=120)
        print_runs(since)
        archived = Scan.objects.archived().count()
        print(f"archived scans: {archived_before} before the retention task, {archived} at the end")
        print_alerts()
        ok = print_memory(sampler, args.limit_mb)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        simulator.stop()
        drop_postgres_database(args.postgres, name)
        shutil.rmtree(var_dir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
