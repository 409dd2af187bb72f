"""How big the database gets: bytes per 100,000 scans, and growth per day at 10,000 active scans.

    .venv/bin/python bench/db_size.py                                     # a fresh SQLite file in a temp dir
    .venv/bin/python bench/db_size.py --postgres postgres://postgres@127.0.0.1:5432/postgres

With --postgres the URL is only used to create a throw-away database (dropped at the end).

Per 100,000 scans: the scans in the dashboard benchmark's mix (75% succeeded, 12% failed, 10% active, 3% unknown)
with their stored answers, three status changes each (the usual timeline: UNKNOWN -> PENDING -> IN-PROGRESS ->
final), an alert rendered from the real mail templates for every failed scan and for 1% stuck ones. Measured on
PostgreSQL as pg_total_relation_size (heap, TOAST and every index) after VACUUM ANALYZE; on SQLite as the file's
used pages.

A day at ACTIVE active scans and the default 30 s interval, modelled by what stays after the day (polls of
unchanged scans rewrite rows in place and add none; the space their old versions take is reused once vacuumed,
and WAL is not database size):
- scans finish and are replaced at ACTIVE / LIFETIME per second (Little's law: with 10,000 always active and a
  scan lasting one hour from tracking to its end, 240,000 new scans a day), each with its three status changes
  and the same alert mix as above;
- one refresh run per interval: 2,880 a day (kept 7 days, so at most 20,160 rows whatever the scan count).
The day is inserted for real (all its rows) and measured the same way.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dashboard_bench import MIX, _scan  # noqa: E402  the same row shape as the page benchmark
from bench.throwaway_db import create_postgres_database, drop_postgres_database  # noqa: E402

SCANS = 100_000
ACTIVE = 10_000
LIFETIME_HOURS = 1.0
INTERVAL_SECONDS = 30
CHUNK = 20_000
STUCK_SHARE = 0.01
TABLES = ("scans_scan", "scans_scanpoll", "scans_statuschange", "scans_alert", "scans_refreshrun")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", metavar="ADMIN_URL", help="measure on a throw-away PostgreSQL database")
    parser.add_argument("--scans", type=int, default=SCANS)
    parser.add_argument("--active", type=int, default=ACTIVE)
    parser.add_argument("--lifetime-hours", type=float, default=LIFETIME_HOURS, help="tracking to end, average")
    parser.add_argument("--skip-day", action="store_true", help="only the per-100,000 figure")
    parser.add_argument("--skip-purge", action="store_true", help="do not time the retention's batches")
    args = parser.parse_args()

    var_dir = tempfile.mkdtemp(prefix="db-size-")
    os.environ.update(VAR_DIR=var_dir, DJANGO_SETTINGS_MODULE="dashboard.settings", DEMO_MODE="true")
    os.environ["SECRET_KEY"] = secrets.token_urlsafe(40)
    os.environ.pop("DATABASE_URL", None)
    database = None
    if args.postgres:
        database = create_postgres_database(args.postgres, "db_size_bench")
        os.environ["DATABASE_URL"] = database[1]
    try:
        _run(args)
        return 0
    finally:
        if database:
            drop_postgres_database(args.postgres, database[0])
        shutil.rmtree(var_dir, ignore_errors=True)


def _run(args) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    print(f"database: {connection.vendor}")
    empty = _sizes()
    started = time.perf_counter()
    rows = _fill(args.scans, random.Random(20261129))
    first_fill = _last_pks()
    filled = _sizes()
    print(f"filled in {time.perf_counter() - started:.0f} s: {_counts(rows)}")
    per_scan = _report("per 100,000 scans", empty, filled, scale=100_000 / args.scans)["database"]
    if not args.skip_day:
        _day(args, filled, per_scan)
    if not args.skip_purge:
        _time_purge(first_fill)


def _day(args, filled: dict[str, int], per_scan: float) -> None:
    new_scans = round(args.active * 86_400 / (args.lifetime_hours * 3600))
    runs = 86_400 // INTERVAL_SECONDS
    print(
        f"\none day at {args.active:,} active scans, a scan lasting {args.lifetime_hours:g} h on average, "
        f"{INTERVAL_SECONDS} s interval: {new_scans:,} new scans, {runs:,} refresh runs"
    )
    started = time.perf_counter()
    day_rows = _fill(new_scans, random.Random(20261130), runs=runs)
    day = _report("growth per day", filled, _sizes(), scale=1.0)
    print(f"  inserted in {time.perf_counter() - started:.0f} s: {_counts(day_rows)}")
    print(f"  check: {new_scans:,} scans x {per_scan / 100_000:,.0f} B = {_mb(new_scans * per_scan / 100_000)}")
    if "scans_scan" in day:
        history = 180 * (day["scans_statuschange"] + day["scans_alert"]) + 7 * day["scans_refreshrun"]
        print(
            f"  with the default retention: status changes and alerts level off at 180 days, {_mb(history)}, "
            f"refresh runs at 7 days; scans (archived, never deleted) keep adding {_mb(day['scans_scan'])} a day"
        )


def _last_pks() -> dict[str, int]:
    from scans.models import Alert, StatusChange

    return {"change": StatusChange.objects.order_by("-pk").values_list("pk", flat=True).first() or 0,
            "alert": Alert.objects.order_by("-pk").values_list("pk", flat=True).first() or 0}  # fmt: skip


def _time_purge(first_fill: dict[str, int]) -> None:
    """Age the first fill's history past the retention, then time retention runs: batches, and an idle run."""
    from django.db import connection
    from django.utils import timezone

    from scans.models import Alert, Scan, StatusChange
    from scans.retention import history_purge

    old = timezone.now() - timedelta(days=200)
    StatusChange.objects.filter(pk__lte=first_fill["change"]).update(observed_at=old)
    Alert.objects.filter(pk__lte=first_fill["alert"]).update(created_at=old)
    # The alerts' scans finished long ago too (FAILED already; the stuck ones' scans are made final here).
    Scan.objects.filter(alerts__pk__lte=first_fill["alert"]).exclude(status__in=Scan.TERMINAL).update(
        status="FAILED"
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    batches, size = 10, 2000
    started = time.perf_counter()
    result = history_purge(now=timezone.now(), batch_size=size, max_batches=batches)
    elapsed = time.perf_counter() - started
    done = -(-result.status_changes // size) + -(-result.alerts // size)  # batches that deleted something
    per_batch = elapsed * 1000 / max(done, 1)
    print(f"\nretention run, {batches} batches of {size} per table: {elapsed * 1000:,.0f} ms for "
          f"{result.status_changes:,} status changes and {result.alerts:,} alerts ({per_batch:,.0f} ms per batch; "
          f"more left in {', '.join(result.unfinished) or 'none'})")  # fmt: skip
    while history_purge(now=timezone.now(), batch_size=5000, max_batches=1000).unfinished:
        pass
    started = time.perf_counter()
    history_purge(now=timezone.now())
    print(f"retention run with nothing old left (the hourly cost at steady state): "
          f"{(time.perf_counter() - started) * 1000:,.0f} ms")  # fmt: skip


def _fill(total: int, rng: random.Random, *, runs: int = 0) -> dict[str, int]:
    """`total` scans with three status changes each and their alerts, plus `runs` refresh runs."""
    from django.utils import timezone

    from scans.models import Alert, RefreshRun, Scan, StatusChange

    now = timezone.now()
    counts = {"scans": 0, "status changes": 0, "alerts": 0, "refresh runs": runs}
    templates = _alert_templates(rng, now)
    for done in range(0, total, CHUNK):
        statuses = rng.choices([s for s, _ in MIX], weights=[w for _, w in MIX], k=min(CHUNK, total - done))
        scans = Scan.objects.bulk_create([_scan(rng, now, status) for status in statuses], batch_size=5000)
        changes, alerts = [], []
        for scan in scans:
            path = (
                "UNKNOWN",
                "PENDING",
                "IN-PROGRESS",
                scan.status if scan.status in Scan.TERMINAL else "SUCCESS",
            )
            at = scan.created_at
            for before, after in itertools.pairwise(path):
                at += timedelta(seconds=rng.uniform(5, 900))
                changes.append(StatusChange(scan=scan, from_status=before, to_status=after, observed_at=at))
            kind = "failed" if scan.status == "FAILED" else "stuck" if rng.random() < STUCK_SHARE else None
            if kind:
                subject, text, html = rng.choice(templates[kind])
                alerts.append(Alert(kind=kind, scan=scan, recipients=["ops@example.com"], subject=subject,
                                    body_text=text, body_html=html, state="sent", sent_at=now))  # fmt: skip
        StatusChange.objects.bulk_create(changes, batch_size=5000)
        Alert.objects.bulk_create(alerts, batch_size=2000)
        counts["scans"] += len(scans)
        counts["status changes"] += len(changes)
        counts["alerts"] += len(alerts)
    RefreshRun.objects.bulk_create(
        [
            RefreshRun(
                started_at=now - timedelta(seconds=INTERVAL_SECONDS * n),
                finished_at=now,
                ids_asked=ACTIVE,
                ids_answered=ACTIVE,
                changed=rng.randint(0, 300),
                api_calls=ACTIVE // 100,
                outcome="ok",
                last_progress_at=now,
            )
            for n in range(runs)
        ],
        batch_size=5000,
    )
    return counts


def _alert_templates(rng: random.Random, now) -> dict[str, list[tuple[str, str, str]]]:
    """Mails rendered from the real templates for a few sample scans (rendering one per alert would be slow)."""
    from django.conf import settings

    from scans.emails import render_email, scan_url

    samples = {}
    for kind, status in (("failed", "FAILED"), ("stuck", "IN-PROGRESS")):
        rendered = []
        for _ in range(20):
            scan = _scan(rng, now, status)
            name = scan.label or scan.tracking_id
            hours = f"{settings.NOT_FOUND_AFTER_HOURS:g}"
            context = {
                "scan": scan,
                "scan_url": scan_url(scan),
                "now": now,
                "name": name,
                "not_found_hours": hours,
            }
            rendered.append(render_email(kind, context))
        samples[kind] = rendered
    return samples


def _sizes() -> dict[str, int]:
    """Bytes per table (heap, TOAST and indexes) on PostgreSQL; the whole file's used bytes on SQLite."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("VACUUM ANALYZE")
            cursor.execute(
                "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relname = ANY(%s)", [list(TABLES)]
            )
            sizes = dict(cursor.fetchall())
            cursor.execute("SELECT pg_database_size(current_database())")
            sizes["database"] = cursor.fetchone()[0]
            return sizes
        cursor.execute("PRAGMA page_size")
        page = cursor.fetchone()[0]
        cursor.execute("PRAGMA page_count")
        pages = cursor.fetchone()[0]
        cursor.execute("PRAGMA freelist_count")
        free = cursor.fetchone()[0]
        return {"database": (pages - free) * page}


def _report(title: str, before: dict[str, int], after: dict[str, int], *, scale: float) -> dict[str, float]:
    """Print the growth between two measurements, scaled; return it per table (and "database")."""
    print(f"{title}:")
    growth = {name: (after[name] - before.get(name, 0)) * scale for name in after}
    for name, size in growth.items():
        print(f"  {name:<20} {_mb(size):>10}")
    return growth


def _counts(rows: dict[str, int]) -> str:
    return ", ".join(f"{value:,} {name}" for name, value in rows.items())


def _mb(size: float) -> str:
    return f"{size / 1_000_000:,.1f} MB"


if __name__ == "__main__":
    sys.exit(main())
