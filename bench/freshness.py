"""Freshness end to end in Chromium: a change at the simulator until the row shows it on an open list page.

    .venv/bin/python bench/freshness.py --scans 10000
    .venv/bin/python bench/freshness.py --scans 100000 --workers 2 --interval 60 --port 18500 \\
        --redis redis://127.0.0.1:6379/2 --var-root /tmp/h-fresh-var

Everything runs as in production, on this machine: a throw-away PostgreSQL database next to --postgres (dropped at
the end), the Protecto simulator in this process (--latency seconds added to every answer), gunicorn (2 workers),
--workers Celery workers (--concurrency each) and Celery beat on the --redis database (flushed first, so give one
nothing else uses). --scans scans are pinned IN-PROGRESS with distinct, recent submitted and started times (the
newest rows of the list) and tracked in chunks of 5,000, in random order so the rows on the first page are spread
over each refresh cycle. REFRESH_MAX_INTERVAL_SECONDS is set to --interval: every active scan is checked every
interval, which is what the promise "within interval + poll period" is about. A thread runs VACUUM ANALYZE on the
tables a refresh writes once a minute, as autovacuum would (this machine's PostgreSQL has it off). Once the first
cycle has polled every scan, Chromium (1280 px wide) logs in as an operator and opens the default list (newest
submitted first, 50 rows). Then --changes times, every 2 to 8 s (random), one scan whose row is on the page and
still IN-PROGRESS is set to SUCCESS at the simulator (time t0); the page records (MutationObserver, browser clock)
when that row first shows "Succeeded" (t1). Changes overlap: the next one does not wait for the last to show.

Printed: N, workers, refresh interval and the page's poll period (DASHBOARD_POLL_SECONDS, its default); the
median, p95 and max of t1 - t0 in seconds and how many changes took longer than interval + poll period (a change
never shown counts as longer), split into simulator -> database (the scan's updated_at) and database -> page; the
table polls answered 200, 204 and otherwise during the measurement, with the share of 204 and the changed rows
per poll period as a share of the rows shown; the refresh cycles' durations (RefreshRun finished_at - started_at,
median and max, of the runs started during the measurement) with their outcomes, and each cycle's start, duration
and scans asked (a cycle that asks for far fewer than N shows scans that waited for a later tick).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import refresh_bench  # noqa: E402
from bench.throwaway_db import create_postgres_database, drop_postgres_database  # noqa: E402
from tests.chromium import launch_chromium  # noqa: E402

USERNAME = "fresh-operator"
# The operator's login on the throwaway site, made up for each run.
PASSWORD = secrets.token_urlsafe(16)
ROWS_PER_PAGE = 50  # the list's default (scans.selectors.DEFAULT_PER_PAGE)
TRACK_CHUNK = 5000

# Installed in the open page: for every watched tracking ID, the browser time its row first shows "Succeeded".
# The table is replaced by htmx (outerHTML), so a MutationObserver on the body sees every new table at once.
WATCH_SCRIPT = """() => {
  window.__fresh = {watch: new Set(), seen: {}};
  const check = () => {
    const fresh = window.__fresh;
    if (!fresh.watch.size) return;
    const now = Date.now();
    for (const row of document.querySelectorAll("#scan-table tbody tr")) {
      const link = row.querySelector("td.id-cell a.mono");
      const badge = row.querySelector("td > span.badge");
      if (!link || !badge) continue;
      const id = link.title;  // the full ID: the cell shows it cut in the middle
      if (fresh.watch.has(id) && badge.textContent.trim() === "Succeeded") {
        fresh.seen[id] = now;
        fresh.watch.delete(id);
      }
    }
  };
  new MutationObserver(check).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""
# (tracking ID, status text) of every row of the table on the page now.
ROWS_SCRIPT = """() => Array.from(document.querySelectorAll("#scan-table tbody tr")).map((row) => {
  const link = row.querySelector("td.id-cell a.mono");
  const badge = row.querySelector("td > span.badge");
  return link && badge ? [link.title, badge.textContent.trim()] : null;
}).filter(Boolean)"""
TAKE_SEEN_SCRIPT = "() => { const seen = window.__fresh.seen; window.__fresh.seen = {}; return seen; }"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=10_000, help="active scans (default 10,000)")
    parser.add_argument("--changes", type=int, default=40, help="changes measured (default 40)")
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes (default 1)")
    parser.add_argument("--concurrency", type=int, default=4, help="processes per worker")
    parser.add_argument("--interval", type=int, default=30, help="REFRESH_INTERVAL_SECONDS (and the max)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the simulator adds to every answer")
    parser.add_argument("--batch-size", type=int, default=100, help="PROTECTO_BATCH_SIZE")
    parser.add_argument("--seed", type=int, default=1, help="seed of the scans' times and the changes")
    parser.add_argument("--port", type=int, default=0, help="gunicorn's port (default: a free one)")
    parser.add_argument("--first-cycle-timeout", type=float, default=1800, help="seconds to wait for it")
    parser.add_argument("--var-root", default=None, help="parent directory of the run's VAR_DIR")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/2")
    parser.add_argument("--in-flight", type=int, default=8, help="REFRESH_MAX_BATCHES_IN_FLIGHT")
    args = parser.parse_args()
    if args.changes > ROWS_PER_PAGE:
        parser.error(f"--changes is at most {ROWS_PER_PAGE}: only the rows of the first page are changed")
    return args


def setup(args: argparse.Namespace, database_url: str, var_dir: Path, simulator) -> dict:
    """refresh_bench's environment and migrated database, plus the static files the pages need."""
    from django.core.management import call_command

    env = refresh_bench.setup(args, database_url, var_dir, simulator)
    # DEBUG is off, so pages name the manifest's hashed static files: collect them as `make run` does.
    call_command("collectstatic", interactive=False, verbosity=0)
    return env


def make_operator() -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user(username=USERNAME, password=PASSWORD)
    user.groups.add(Group.objects.get(name="Operators"))  # the group comes from the roles migration


def track(count: int, simulator, rng: random.Random) -> list[str]:
    """Pin `count` IN-PROGRESS scans submitted over the last hour and track them; return the IDs, newest first."""
    from scans.services import scans_track

    now = datetime.now(UTC)
    newest = now - timedelta(minutes=3)
    spacing = 3600 / count
    ids = []
    for n in range(count):
        tracking_id = f"fresh-{rng.getrandbits(64):016x}-{n:06d}"
        submitted = newest - timedelta(seconds=n * spacing + rng.uniform(0, spacing * 0.9))
        started = submitted + timedelta(seconds=rng.uniform(5, 120))
        simulator.add_scan(tracking_id, status="IN-PROGRESS", submitted_at=submitted, started_at=started)
        ids.append(tracking_id)
    # Tracked in random order: claims go by next check, then primary key, so the first page's rows are not all
    # polled at the start of every cycle.
    shuffled = ids[:]
    rng.shuffle(shuffled)
    for start in range(0, count, TRACK_CHUNK):
        scans_track(ids=shuffled[start : start + TRACK_CHUNK])
    return ids


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(env: dict, command: list[str], log: Path) -> subprocess.Popen:
    """Start a child in its own process group (gunicorn's and Celery's children are stopped with it)."""
    with log.open("w") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def start_processes(args: argparse.Namespace, env: dict, var_dir: Path, port: int) -> list[subprocess.Popen]:
    """gunicorn, the Celery workers and beat, as demo/run.py starts them."""
    from django.conf import settings

    python = sys.executable
    web = [python, "-m", "gunicorn", "dashboard.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2"]
    children = [start(env, web, var_dir / "web.log")]
    celery = [python, "-m", "celery", "-A", "dashboard"]
    for n in range(1, args.workers + 1):
        worker = [*celery, "worker", "-n", f"fresh{n}@%h", "--concurrency", str(args.concurrency)]
        worker += ["--without-mingle", "--without-gossip", "--loglevel", "WARNING"]
        children.append(start(env, worker, var_dir / f"worker{n}.log"))
    beat = [*celery, "beat", "--loglevel", "WARNING", "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME]
    children.append(start(env, beat, var_dir / "beat.log"))
    return children


def stop_processes(children: list[subprocess.Popen]) -> None:
    """SIGTERM each child's group, then SIGKILL what is left after a grace period."""
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # what a group leader left behind, too
        child.wait()


def check_alive(children: list[subprocess.Popen], var_dir: Path) -> None:
    for child in children:
        if child.poll() is not None:
            raise RuntimeError(f"{child.args[:6]} exited with {child.returncode}; logs in {var_dir}")


def wait_for_web(url: str, children: list[subprocess.Popen], var_dir: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_alive(children, var_dir)
        try:
            with urllib.request.urlopen(f"{url}/livez", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # refused, reset or timed out while gunicorn starts on a busy machine
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer at {url} within {timeout:.0f} s")


def wait_first_cycle(count: int, timeout: float, children: list[subprocess.Popen], var_dir: Path) -> float:
    """Wait until every scan has been polled once and a refresh run has closed; return the seconds waited.

    Not until no run is open: when a cycle takes longer than the interval, one always is.
    """
    from scans.models import RefreshRun, Scan

    began = time.monotonic()
    shown = began
    while True:
        check_alive(children, var_dir)
        unpolled = Scan.objects.filter(poll__last_checked_at__isnull=True).count()
        if not unpolled and RefreshRun.objects.exclude(outcome=RefreshRun.Outcome.RUNNING).exists():
            return time.monotonic() - began
        if time.monotonic() - shown > 30:
            shown = time.monotonic()
            print(f"  first cycle: {count - unpolled} of {count} polled after {shown - began:.0f} s", flush=True)
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"the first cycle did not poll every scan within {timeout:.0f} s")
        time.sleep(1)


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (p95 of 40 values is the 38th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


class PollCounter:
    """Counts the table's htmx polls (GET / with the `v` version) by answer status, while `on`."""

    def __init__(self) -> None:
        self.on = False
        self.statuses: Counter[str] = Counter()

    def response(self, response) -> None:
        if self.on and _is_table_poll(response.request):
            self.statuses[str(response.status)] += 1

    def failed(self, request) -> None:
        if self.on and _is_table_poll(request):
            self.statuses["failed"] += 1


def _is_table_poll(request) -> bool:
    parts = urlsplit(request.url)
    return parts.path == "/" and "v" in parse_qs(parts.query) and request.headers.get("hx-request") == "true"


def measure(page, args: argparse.Namespace, simulator, budget: float, rng: random.Random) -> dict:
    """Make the changes, one every 2-8 s, while watching the page; return t0 and t1 (None: never shown) per ID."""
    give_up = max(180.0, 4 * budget)
    started: dict[str, float] = {}
    shown: dict[str, float] = {}
    next_change = time.time() + rng.uniform(2, 8)
    while True:
        now = time.time()
        if len(started) < args.changes and now >= next_change:
            rows = page.evaluate(ROWS_SCRIPT)
            candidates = [i for i, text in rows if text == "In progress" and i not in started]
            if candidates:
                tracking_id = rng.choice(candidates)
                page.evaluate("(id) => window.__fresh.watch.add(id)", tracking_id)
                simulator.set_status(tracking_id, "SUCCESS")  # ended_at: now
                started[tracking_id] = time.time()
            next_change = time.time() + rng.uniform(2, 8)
        for tracking_id, at_ms in page.evaluate(TAKE_SEEN_SCRIPT).items():
            shown[tracking_id] = at_ms / 1000
        waiting = [i for i in started if i not in shown and time.time() - started[i] < give_up]
        if len(started) == args.changes and not waiting:
            break
        page.wait_for_timeout(250)  # also lets Playwright deliver the response events
    return {tracking_id: (t0, shown.get(tracking_id)) for tracking_id, t0 in started.items()}


def browse_and_measure(
    url: str, args: argparse.Namespace, simulator, budget: float, rng: random.Random
) -> tuple[dict, PollCounter, datetime, datetime]:
    """Log in, open the list, make and watch the changes; return them, the poll counts and the window."""
    from playwright.sync_api import expect, sync_playwright

    polls = PollCounter()
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("response", polls.response)
            page.on("requestfailed", polls.failed)
            page.goto(f"{url}/login/")
            page.fill("#id_username", USERNAME)
            page.fill("#id_password", PASSWORD)
            page.get_by_role("button", name="Log in", exact=True).click()
            expect(page.locator("#scan-table tbody tr")).to_have_count(ROWS_PER_PAGE, timeout=60_000)
            page.evaluate(WATCH_SCRIPT)
            if page.evaluate("() => document.visibilityState") != "visible":
                raise RuntimeError("the page is not visible: it would not poll")
            polls.on = True
            began = datetime.now(UTC)
            changes = measure(page, args, simulator, budget, rng)
            ended = datetime.now(UTC)
            polls.on = False
        finally:
            browser.close()
    return changes, polls, began, ended


def report(args, poll_seconds: int, changes: dict, polls: PollCounter, began: datetime, ended: datetime) -> None:
    from django.db.models import F

    from scans.models import RefreshRun, Scan

    budget = args.interval + poll_seconds
    stamps = dict(Scan.objects.filter(tracking_id__in=list(changes)).values_list("tracking_id", "updated_at"))
    seen = {i: (t0, t1) for i, (t0, t1) in changes.items() if t1 is not None}
    latencies = [t1 - t0 for t0, t1 in seen.values()]
    to_db = [stamps[i].timestamp() - t0 for i, (t0, _t1) in seen.items()]
    to_page = [t1 - stamps[i].timestamp() for i, (_t0, t1) in seen.items()]
    over = sum(1 for value in latencies if value > budget) + len(changes) - len(seen)
    print()
    print(
        f"N {args.scans} active scans; {args.workers} worker(s) of concurrency {args.concurrency}; "
        f"refresh interval {args.interval} s (max interval {args.interval} s); page poll period {poll_seconds} s; "
        f"simulator latency {args.latency * 1000:.0f} ms"
    )
    if latencies:
        print(
            f"change at simulator -> row changed on the page: median {statistics.median(latencies):.1f} s, "
            f"p95 {percentile(latencies, 0.95):.1f} s, max {max(latencies):.1f} s over {len(latencies)} shown "
            f"of {len(changes)} changes; {over} of {len(changes)} took longer than interval + poll = {budget} s"
            + (f" ({len(changes) - len(seen)} never shown)" if len(seen) < len(changes) else "")
        )
        print(
            f"  of which simulator -> database: median {statistics.median(to_db):.1f} s, p95 "
            f"{percentile(to_db, 0.95):.1f} s, max {max(to_db):.1f} s; database -> page: median "
            f"{statistics.median(to_page):.1f} s, p95 {percentile(to_page, 0.95):.1f} s, max {max(to_page):.1f} s"
        )
    else:
        print(f"none of the {len(changes)} changes showed on the page")
    seconds = (ended - began).total_seconds()
    total = sum(polls.statuses.values())
    answered_204 = polls.statuses.get("204", 0)
    per_period = len(changes) / (seconds / poll_seconds)
    print(
        f"table polls during the {seconds:.0f} s measured: {total} ({dict(sorted(polls.statuses.items()))}); "
        f"answered 204: {answered_204} = {answered_204 / total:.0%}"
        if total
        else "no table polls seen"
    )
    print(
        f"changed rows per poll period: {per_period:.2f} of {ROWS_PER_PAGE} shown = "
        f"{per_period / ROWS_PER_PAGE:.1%} (one change every {seconds / max(len(changes), 1):.1f} s)"
    )
    runs = RefreshRun.objects.filter(started_at__gte=began, started_at__lte=ended, finished_at__isnull=False)
    rows = list(
        runs.order_by("started_at")
        .annotate(took=F("finished_at") - F("started_at"))
        .values_list("started_at", "took", "outcome", "ids_asked")
    )
    busy = [(at, took.total_seconds(), asked) for at, took, outcome, asked in rows if outcome != "idle"]
    outcomes = dict(Counter(outcome for _at, _took, outcome, _asked in rows))
    if busy:
        durations = [took for _at, took, _asked in busy]
        print(
            f"refresh cycles started during the measurement: {len(rows)} ({outcomes}); duration of those that "
            f"polled: median {statistics.median(durations):.1f} s, max {max(durations):.1f} s"
        )
        # A scan polled late in a cycle may not be due at the next tick: the scans asked per cycle show it.
        print(
            "  each cycle (start after the measurement began, duration, scans asked): "
            + ", ".join(f"+{(at - began).total_seconds():.0f} s {took:.1f} s {asked}" for at, took, asked in busy)
        )
    else:
        print(f"refresh cycles started during the measurement: {len(rows)} ({outcomes}), none polled")


# autovacuum's default naptime: with every active scan's poll row rewritten each cycle, it would vacuum the poll
# table this often (its threshold is 20% of the rows changed).
VACUUM_EVERY_SECONDS = 60


def start_autovacuum_stand_in(database_url: str) -> None:
    """VACUUM ANALYZE the tables a refresh writes every VACUUM_EVERY_SECONDS, as autovacuum would: this machine's
    PostgreSQL runs with it off, and without it the poll table's dead rows slow every cycle down more than the
    last. A daemon thread on its own connection; it ends with the process."""
    import psycopg

    def run() -> None:
        with psycopg.connect(database_url, autocommit=True) as connection:
            while True:
                time.sleep(VACUUM_EVERY_SECONDS)
                tables = "scans_scanpoll, scans_scan, scans_statuschange, scans_refreshrun"
                connection.execute(f"VACUUM ANALYZE {tables}")

    threading.Thread(target=run, name="autovacuum stand-in", daemon=True).start()


def main() -> int:
    args = parse_args()
    from demo.simulator import ProtectoSimulator, SimulatorConfig

    rng = random.Random(args.seed)
    if args.var_root:
        Path(args.var_root).mkdir(parents=True, exist_ok=True)
    var_dir = Path(tempfile.mkdtemp(prefix="freshness-", dir=args.var_root))
    name, database_url = create_postgres_database(args.postgres, "freshness")
    simulator = ProtectoSimulator(SimulatorConfig(seed=args.seed, quiet=True, latency=args.latency)).start()
    children: list[subprocess.Popen] = []
    try:
        env = setup(args, database_url, var_dir, simulator)
        from django.conf import settings

        poll_seconds = settings.DASHBOARD_POLL_SECONDS
        make_operator()
        began = time.monotonic()
        track(args.scans, simulator, rng)
        print(f"{args.scans} IN-PROGRESS scans tracked in {time.monotonic() - began:.0f} s", flush=True)
        port = args.port or free_port()
        children = start_processes(args, env, var_dir, port)
        start_autovacuum_stand_in(database_url)
        url = f"http://127.0.0.1:{port}"
        wait_for_web(url, children, var_dir)
        waited = wait_first_cycle(args.scans, args.first_cycle_timeout, children, var_dir)
        print(f"first cycle(s) polled every scan {waited:.0f} s after the processes started", flush=True)
        changes, polls, measured_from, measured_to = browse_and_measure(
            url, args, simulator, args.interval + poll_seconds, rng
        )
        check_alive(children, var_dir)
        report(args, poll_seconds, changes, polls, measured_from, measured_to)
    finally:
        stop_processes(children)
        simulator.stop()
        drop_postgres_database(args.postgres, name)
        shutil.rmtree(var_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
