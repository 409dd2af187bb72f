"""Server time of the live dashboard on 100,000 scans: the filtered table partial, the full page, and the
"nothing changed" poll, with the partial's query count.

    .venv/bin/python bench/dashboard_bench.py                     # a fresh SQLite file in a temp dir
    .venv/bin/python bench/dashboard_bench.py --explain           # also the plan of each query of the partial
    .venv/bin/python bench/dashboard_bench.py --postgres postgres://postgres@127.0.0.1:5432/postgres

With --postgres the URL is only used to create a throw-away database (dropped at the end); the developer's
database is never touched. Times are measured in-process with Django's test Client: middleware, view, queries
and template rendering, no network.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throwaway_db import create_postgres_database, drop_postgres_database  # noqa: E402

SCANS = 100_000
RUNS = 20
FILL_CHUNK = 50_000
# (status, share of all scans)
MIX = (("PENDING", 0.05), ("IN-PROGRESS", 0.05), ("SUCCESS", 0.75), ("FAILED", 0.12), ("UNKNOWN", 0.03))
SOURCES = ("salesforce", "snowflake", "postgres", "s3", "bigquery", "sharepoint", "zendesk", "redshift")
LABELS = (
    "Nightly CRM sweep", "HR share audit", "Warehouse PII check", "Support tickets", "Data lake landing",
    "Billing replica", "Marketing exports", "Payroll EU", "Payroll US", "Vendor contracts", "Legal hold",
    "Customer 360", "Clickstream daily", "Orders archive", "Finance close", "Claims intake", "Partner feeds",
    "Risk models", "Sales pipeline", "Loyalty program", "Mobile telemetry", "Call transcripts", "KYC documents",
    "Ad attribution", "Inventory sync", "Returns portal", "Chat logs", "Survey responses", "Fraud signals",
    "Backup verify",
)  # fmt: skip
FAILURES = (
    "Connection to data source '{source}' timed out after 300s",
    "Permission denied reading object {path}",
    "Schema changed during scan: column 'email' no longer exists",
    "Quota exceeded for tenant: 500000 samples per day",
    "Data source '{source}' answered HTTP 503 while listing objects\nRetry-After: 120\nrequest id 7f3a9c",
    "Sampling failed: column 'phone' is empty in all 1000 sampled rows",
)
# A fragment of one label only ("Payroll EU"/"Payroll US" share it), so it finds a few hundred failed scans.
SEARCH = "yrol"
# A Problems group's "show in the list" link: every failed "Permission denied reading object {path}".
GROUP = "Permission+denied+reading+object+%3Cpath%3E"
TARGETS = {"partial_ms": 100.0, "poll_ms": 10.0, "queries": 6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", metavar="ADMIN_URL", help="benchmark on a throw-away PostgreSQL database")
    parser.add_argument("--explain", action="store_true", help="print the plan of each query of the partial")
    parser.add_argument("--scans", type=int, default=SCANS)
    parser.add_argument(
        "--keep", metavar="DIR", help="use and keep DIR (not a temp dir); a database filled there before is reused"
    )
    parser.add_argument(
        "--postgres-db",
        metavar="NAME",
        help="with --postgres: use and keep database NAME (created if missing)",
    )
    parser.add_argument("--fill-only", action="store_true", help="fill the database, then stop")
    parser.add_argument(
        "--pages", action="store_true", help="issue 9's table: each page (counts cached and not) vs Django admin"
    )
    parser.add_argument("--migrate-back", metavar="NAME", help="first unapply the scans migrations after NAME")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"requests per case (default {RUNS})")
    args = parser.parse_args()

    var_dir = args.keep or tempfile.mkdtemp(prefix="dashboard-bench-")
    os.environ["VAR_DIR"] = var_dir
    os.environ["DJANGO_SETTINGS_MODULE"] = "dashboard.settings"
    # Nothing here talks to Protecto: demo mode only spares the benchmark a tenant URL and token.
    os.environ.update(DEMO_MODE="true", SECRET_KEY=secrets.token_urlsafe(40))
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("DEBUG", None)
    database = None
    if args.postgres and args.postgres_db:
        os.environ["DATABASE_URL"] = _kept_postgres_database(args.postgres, args.postgres_db)
    elif args.postgres:
        database = create_postgres_database(args.postgres, "dashboard_bench")
        os.environ["DATABASE_URL"] = database[1]
    try:
        return _run(args)
    finally:
        if database:
            drop_postgres_database(args.postgres, database[0])
        if not args.keep:
            shutil.rmtree(var_dir, ignore_errors=True)


def _kept_postgres_database(admin_url: str, name: str) -> str:
    """The URL of database `name` next to `admin_url`, created empty if it does not exist yet."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def _run(args) -> int:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import override_settings, setup_test_environment

    setup_test_environment()  # lets the test Client's "testserver" host in
    warnings.filterwarnings("ignore", message="No directory at")  # whitenoise: no collectstatic in a temp dir
    override_settings(
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
    ).enable()

    from scans.models import Scan

    print(f"database: {connection.vendor} {connection.settings_dict['NAME']}")
    started = time.perf_counter()
    if args.migrate_back:
        call_command("migrate", "scans", args.migrate_back, verbosity=0)
    migrating = time.perf_counter()
    call_command("migrate", verbosity=0)
    print(f"migrated in {time.perf_counter() - migrating:.1f} s")
    if Scan.objects.exists():
        print(f"reusing the {Scan.objects.count()} scans already there")
    else:
        counts = _fill(args.scans)
        print(
            f"filled in {time.perf_counter() - started:.1f} s: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        )
    with connection.cursor() as cursor:
        # PostgreSQL: what autovacuum would have done by now (statistics, and the visibility map that lets
        # counts read an index alone).
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
    if args.fill_only:
        return 0
    if args.pages:
        return 0 if _measure_pages(runs=args.runs, explain=args.explain) else 1

    results = _measure(explain=args.explain)
    return 0 if results else 1


def _fill(total: int) -> dict[str, int]:
    """100,000 scans as the poller would have left them, their transitions for a subset, and refresh runs."""
    from django.utils import timezone

    from scans.models import RefreshRun, Scan, StatusChange

    rng = random.Random(20261128)
    now = timezone.now()
    # In chunks, so a million scans never sit in memory at once.
    for done in range(0, total, FILL_CHUNK):
        size = min(FILL_CHUNK, total - done)
        statuses = rng.choices([s for s, _ in MIX], weights=[w for _, w in MIX], k=size)
        Scan.objects.bulk_create([_scan(rng, now, status) for status in statuses], batch_size=5000)
        if total > FILL_CHUNK:
            print(f"  {done + size} scans", flush=True)

    # Transitions for a fifth of the scans (at most 20,000): UNKNOWN -> PENDING -> IN-PROGRESS -> final.
    changes = []
    sample = Scan.objects.filter(pk__lte=5 * 20_000).values_list(
        "pk", "status", "created_at", "started_at", "ended_at"
    )
    for pk, status, created, started, ended in sample.iterator():
        if pk % 5:
            continue
        steps = [("UNKNOWN", "PENDING", created)]
        if started:
            steps.append(("PENDING", "IN-PROGRESS", started + timedelta(seconds=rng.uniform(1, 30))))
        if ended:
            steps.append(("IN-PROGRESS", status, ended + timedelta(seconds=rng.uniform(1, 30))))
        changes += [StatusChange(scan_id=pk, from_status=a, to_status=b, observed_at=t) for a, b, t in steps]
    StatusChange.objects.bulk_create(changes, batch_size=5000)

    runs = []
    for n in range(60):
        start = now - timedelta(seconds=30 * n + 3)
        runs.append(
            RefreshRun(
                started_at=start,
                finished_at=start + timedelta(seconds=rng.uniform(0.5, 4)),
                ids_asked=10_000,
                ids_answered=10_000,
                changed=rng.randint(0, 400),
                api_calls=100,
                outcome=RefreshRun.Outcome.OK if n % 20 else RefreshRun.Outcome.PARTIAL,
            )
        )
    RefreshRun.objects.bulk_create(runs)
    by_status = {s: Scan.objects.filter(status=s).count() for s, _ in MIX}
    finished_24h = Scan.objects.filter(ended_at__gte=now - timedelta(hours=24)).count()
    return {
        "scans": Scan.objects.count(),
        **by_status,
        "archived": Scan.objects.filter(archived_at__isnull=False).count(),
        "finished 24 h": finished_24h,
        "status changes": StatusChange.objects.count(),
        "refresh runs": RefreshRun.objects.count(),
    }


def _scan_times(
    rng: random.Random, now: datetime, status: str
) -> tuple[datetime, datetime | None, datetime | None]:
    """(submitted, started, ended) as the API would report them for a scan in this status."""
    started = ended = None
    if status == "PENDING":
        # Most waiting scans were submitted minutes ago; a tenth have waited past the stuck limit.
        submitted = now - timedelta(minutes=rng.uniform(0, 25) if rng.random() < 0.9 else rng.uniform(31, 600))
    elif status == "IN-PROGRESS":
        started = now - timedelta(minutes=rng.uniform(0, 100) if rng.random() < 0.9 else rng.uniform(121, 900))
        submitted = started - timedelta(seconds=rng.uniform(5, 600))
    else:
        submitted = now - timedelta(days=rng.uniform(0, 30))
        if status != "UNKNOWN":
            started = submitted + timedelta(seconds=rng.lognormvariate(4, 1))
            ended = min(started + timedelta(seconds=rng.lognormvariate(6, 1.2)), now - timedelta(seconds=1))
            started = min(started, ended)
    return submitted, started, ended


def _answer(tracking_id: str, raw_status: str, times: tuple, error: str) -> dict:
    """The raw status item the API would have sent (2024 shape)."""
    shown = [value.strftime("%Y-%m-%d %H:%M:%S.%f") if value else "-" for value in times]
    return {
        "tracking_id": tracking_id,
        "status": raw_status,
        "submitted_at": shown[0],
        "process_started_at": shown[1],
        "process_ended_at": shown[2],
        "error_msg": error or "-",
    }


def _scan(rng: random.Random, now: datetime, status: str):
    from scans.models import Scan

    tracking_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if rng.random() < 0.2:  # the 2025 shape: a UUID and a DDMMYYYYHHMMSS stamp
        tracking_id += now.strftime("%d%m%Y%H%M%S")
    source = rng.choice(SOURCES)
    path = "/".join(rng.sample(["CustomerDB", "public", "orders", "HR", "events", "2026", "exports"], 3))
    submitted, started, ended = _scan_times(rng, now, status)
    created = submitted + timedelta(seconds=rng.uniform(1, 20))
    final = status in ("SUCCESS", "FAILED")
    checked = min(now, (ended or now) + timedelta(seconds=rng.uniform(0, 30))) if final else now
    error = rng.choice(FAILURES).format(source=source, path=path) if status == "FAILED" else ""
    raw_status = {"UNKNOWN": rng.choice(["QUEUED", "CANCELLED", ""])}.get(status, status)
    archived = now - timedelta(days=1) if final and rng.random() < 0.02 else None
    return Scan(
        tracking_id=tracking_id,
        status=status,
        raw_status=raw_status,
        submitted_at=submitted,
        started_at=started,
        ended_at=ended,
        error_message=error,
        label=rng.choice(LABELS) if rng.random() < 0.9 else "",
        data_source=source,
        object_path=path,
        last_raw_answer=_answer(tracking_id, raw_status, (submitted, started, ended), error),
        created_at=created,  # also the first check of the poll row the database adds: final ones get none
        last_changed_at=ended or started or created,
        archived_at=archived,
        updated_at=checked,
    )


HTMX = {"HTTP_HX_REQUEST": "true"}
FILTERED = f"/?status=FAILED&q={SEARCH}&sort=-run_time&per=50"


def _measure(*, explain: bool) -> bool:
    """Time each request, count the partial's queries and compare with the targets; True when all are met."""
    from django.contrib.auth.models import Group, User
    from django.test import Client

    from scans import selectors
    from scans.models import Scan

    operator, _ = User.objects.get_or_create(username="bench-operator")
    operator.groups.add(Group.objects.get(name="Operators"))
    client = Client()
    client.force_login(operator)
    matches = (
        selectors.scans_matching(filters=selectors.ScanFilters(q=SEARCH)).filter(status=Scan.Status.FAILED).count()
    )
    print(f"\nfailed scans matching q={SEARCH!r}: {matches}; {RUNS} runs each after one warm-up request\n")
    figures = _time_requests(client, _cases(selectors.scans_version()))
    query_counts = _partial_queries(client, explain=explain)
    return _check_targets(figures, query_counts)


def _cases(version: str) -> list[tuple[str, str, dict, int]]:
    """(name, URL, headers, expected status) of every request measured."""
    return [
        ("(a) filtered partial (htmx)", FILTERED, HTMX, 200),
        ("(b) filtered full page", FILTERED, {}, 200),
        ("(c) poll, nothing changed", f"{FILTERED}&v={version}", HTMX, 204),
        ("    default partial (htmx)", "/", HTMX, 200),
        ("    problems first, per=100", "/?sort=problems&per=100", HTMX, 200),
        ("    stuck chip", "/?status=STUCK", HTMX, 200),
        ("    full page, no filters", "/", {}, 200),
        ("    header part", "/header/", HTMX, 200),
    ]


def _time_requests(client, cases) -> dict[str, tuple[float, float, int]]:
    """Median and p95 milliseconds and the query count of each case, printed as a table."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from scans.header_stats import percentile

    header = (
        f"{'request':<32} {'status':>6} {'median ms':>10} {'p95 ms':>8} {'min ms':>8} {'queries':>8} {'db ms':>7}"
    )
    print(header)
    print("-" * len(header))
    figures = {}
    for name, url, headers, expected in cases:
        response = client.get(url, **headers)  # warm-up: session cached, templates compiled
        assert response.status_code == expected, (url, response.status_code)
        times = []
        for _ in range(RUNS):
            start = time.perf_counter()
            response = client.get(url, **headers)
            times.append((time.perf_counter() - start) * 1000)
            assert response.status_code == expected
        with CaptureQueriesContext(connection) as queries:
            client.get(url, **headers)
        times.sort()
        db_ms = sum(float(q["time"]) for q in queries.captured_queries) * 1000
        median, p95 = statistics.median(times), percentile(times, 0.95)
        figures[name] = (median, p95, len(queries))
        row = f"{name:<32} {expected:>6} {median:>10.1f} {p95:>8.1f} {times[0]:>8.1f} {len(queries):>8}"
        print(f"{row} {db_ms:>7.1f}")
    return figures


def _partial_queries(client, *, explain: bool) -> dict[int, int]:
    """The filtered partial's queries at 25 and 100 rows a page, printed (with plans if asked)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    print("\n(d) queries of the filtered partial")
    query_counts = {}
    for per in (25, 100):
        url = f"/?status=FAILED&q={SEARCH}&sort=-run_time&per={per}"
        client.get(url, **HTMX)
        with CaptureQueriesContext(connection) as queries:
            client.get(url, **HTMX)
        query_counts[per] = len(queries)
        print(f"  per={per}: {len(queries)} queries")
        for query in queries.captured_queries:
            print(f"    {float(query['time']) * 1000:7.1f} ms  {_short(query['sql'])}")
            if explain and per == 25:
                for line in _plan(connection, query["sql"]):
                    print(f"               {line}")
    return query_counts


def _check_targets(figures: dict, query_counts: dict[int, int]) -> bool:
    partial = figures["(a) filtered partial (htmx)"][0]
    poll = figures["(c) poll, nothing changed"][0]
    checks = [
        (f"partial median < {TARGETS['partial_ms']:.0f} ms", partial < TARGETS["partial_ms"], f"{partial:.1f} ms"),
        (f"poll median < {TARGETS['poll_ms']:.0f} ms", poll < TARGETS["poll_ms"], f"{poll:.1f} ms"),
        (
            f"partial <= {TARGETS['queries']} queries (per=25 and per=100)",
            max(query_counts.values()) <= TARGETS["queries"],
            f"{query_counts[25]} / {query_counts[100]}",
        ),
    ]
    print("\ntargets")
    for text, ok, value in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {text:<44} {value}")
    return all(ok for _, ok, _ in checks)


PAGE_TARGET_MS = 200.0
POLL_TARGET_MS = 10.0


def _page_cases(version: str, id_fragment: str) -> list[tuple[str, str, str | None, int]]:
    """(name, dashboard URL, the admin changelist URL doing the same or None, expected status)."""
    admin = "/admin/scans/scan/"
    deep = selectors_max_listed() // 50  # the last page the list reaches at 50 a page
    return [
        ("default list (table partial)", "/", admin, 200),
        ("status filter (FAILED)", "/?status=FAILED", f"{admin}?status__exact=FAILED", 200),
        (f"label search {SEARCH!r}", f"/?q={SEARCH}", f"{admin}?q={SEARCH}", 200),
        (f"ID substring {id_fragment!r}", f"/?q={id_fragment}", f"{admin}?q={id_fragment}", 200),
        ("failed & stuck first", "/?sort=problems", None, 200),
        (f"deep page ({deep}, last reachable)", f"/?page={deep}", f"{admin}?p={deep - 1}", 200),
        ("header", "/header/", None, 200),
        ("unchanged poll", f"/?v={version}", None, 204),
        ("problems, grouped (24 h)", "/problems/", None, 200),
        ("problems, grouped (7 d)", "/problems/?window=7d", None, 200),
        ("a problem group in the list", f"/?status=FAILED&error={GROUP}", None, 200),
    ]


def selectors_max_listed() -> int:
    from scans import selectors

    return selectors.MAX_LISTED


def _median_ms(client, url: str, headers: dict, expected: int, runs: int, *, cold: bool) -> float:
    """Median server time of `runs` requests after one warm-up; `cold` empties the cache before each one."""
    from django.core.cache import cache

    response = client.get(url, **headers)
    assert response.status_code == expected, (url, response.status_code)
    times = []
    for _ in range(runs):
        if cold:
            cache.clear()  # as after a change: the counts and the 24 h figures are computed again
        start = time.perf_counter()
        response = client.get(url, **headers)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == expected
    return statistics.median(times)


def _measure_pages(*, runs: int, explain: bool) -> bool:
    """Issue 9's table: each page's median with the counts cached (polls, other users) and recomputed (after a
    change), and Django admin's changelist on the same data; True when every page is under the target."""
    from django.contrib.auth.models import Group, User
    from django.test import Client

    from scans import selectors
    from scans.models import Scan

    operator, _ = User.objects.get_or_create(username="bench-operator")
    operator.groups.add(Group.objects.get(name="Operators"))
    boss, _ = User.objects.get_or_create(username="bench-admin", defaults={"is_staff": True, "is_superuser": True})
    client, admin = Client(), Client()
    client.force_login(operator)
    admin.force_login(boss)
    some_id = Scan.objects.order_by("-pk").values_list("tracking_id", flat=True)[Scan.objects.count() // 3]
    fragment = some_id[9:15]
    print(f"\n{runs} runs each after a warm-up; medians in ms, server time in-process (Client, no network)\n")
    head = f"{'page':<34} {'cached':>8} {'uncached':>9} {'admin':>9} {'admin/ours':>11}  target"
    print(head)
    print("-" * len(head))
    ok = True
    for name, url, admin_url, expected in _page_cases(selectors.scans_version(), fragment):
        cached = _median_ms(client, url, HTMX, expected, runs, cold=False)
        uncached = cached if expected == 204 else _median_ms(client, url, HTMX, expected, runs, cold=True)
        theirs = _median_ms(admin, admin_url, {}, 200, max(3, runs // 4), cold=False) if admin_url else None
        target = POLL_TARGET_MS if expected == 204 else PAGE_TARGET_MS
        met = max(cached, uncached) < target
        ok &= met
        shown = f"{theirs:>9.1f} {theirs / uncached:>10.1f}x" if theirs else f"{'-':>9} {'-':>11}"
        print(f"{name:<34} {cached:>8.1f} {uncached:>9.1f} {shown}  {'PASS' if met else 'MISS'} < {target:.0f}")
    if explain:
        _partial_queries(client, explain=True)
    return ok


def _short(sql: str, width: int = 150) -> str:
    return sql if len(sql) <= width else sql[: width - 20] + " ... " + sql[-15:]


def _plan(connection, sql: str) -> list[str]:
    """The database's plan for an already-interpolated query (captured SQL has its parameters inlined)."""
    prefix = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN (ANALYZE, BUFFERS) "
    with connection.cursor() as cursor:
        cursor.execute(prefix + sql)
        rows = cursor.fetchall()
    return [" | ".join(str(cell) for cell in row[-1:]) for row in rows]


if __name__ == "__main__":
    sys.exit(main())
