"""Take the docs' screenshots of the dashboard: docs/dashboard.png and docs/scan-page.png.

Run from the repository root:

    .venv/bin/python bench/screenshot.py
    .venv/bin/python bench/screenshot.py --url http://127.0.0.1:8000 --username ops --password '...'

Without --url the script sets up its own dashboard in a temporary directory (VAR_DIR): a fresh SQLite database,
migrated, filled with a realistic day of scans, status changes and refresh runs, a superuser, and
`manage.py runserver` on a free port. Nothing under var/ and no configured database is touched, and the directory
is removed afterwards. With --url it only logs in to that dashboard and takes the pictures.

Needs Debian's Chromium at /usr/bin/chromium (never a downloaded browser).
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.chromium import CHROMIUM, launch_chromium  # noqa: E402  (needs ROOT on the path)

VIEWPORT = {"width": 1440, "height": 1000}
USERNAME = "ops"
# The throwaway site's login, made up for each run.
PASSWORD = secrets.token_urlsafe(16)

# (label, data source, object path) of recurring scan jobs, as in demo/seed.py; a few scans carry no label.
JOBS = [
    ("Nightly CRM sweep", "salesforce", "CustomerDB/Marketingschema/Customerstable"),
    ("HR share audit", "sharepoint", "HR/Contracts"),
    ("Warehouse PII check", "snowflake", "ANALYTICS/PUBLIC/ORDERS"),
    ("Support tickets", "zendesk", "Tickets/Comments"),
    ("Data lake landing", "s3", "landing-zone/exports/2026-11"),
    ("Billing replica", "postgres", "billing/public/invoices"),
    ("", "bigquery", "marketing/events/2026"),
]
ERRORS = [
    "Connection to data source '{source}' timed out after 300s",
    "Permission denied reading object {path}",
    "Schema changed during scan: column 'email' no longer exists",
    "Quota exceeded for tenant: 500000 samples per day",
    "Data source '{source}' answered HTTP 503 while listing objects",
    "Sampling failed: column 'phone' is empty in all 1000 sampled rows",
    # A long, multi-line one: the table shows the first line, cut; the scan page shows all of it.
    "Permission denied reading object {path}: the service account 'protecto-scanner@tenant' lacks the "
    "SELECT privilege on 3 of 14 tables\nTables: CUSTOMERS, CONTACTS, LEADS\nAsk the data owner to grant "
    "read access, then start the scan again.",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running dashboard to photograph instead of setting one up")
    parser.add_argument("--username", default=USERNAME)
    parser.add_argument("--password", help="with --url: the password of --username")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="directory for the PNG files")
    options = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"No Chromium at {CHROMIUM}: apt-get install chromium", file=sys.stderr)
        return 2
    options.out.mkdir(parents=True, exist_ok=True)
    if options.url and not options.password:
        parser.error("--url needs --password")
    if options.url:
        take_screenshots(options.url.rstrip("/"), options.username, options.password, options.out)
        return 0
    with tempfile.TemporaryDirectory(prefix="dashboard-screenshot-") as var_dir:
        env = _environment(Path(var_dir))
        os.environ.update(env)
        _build_site()
        with _running_server(env, Path(var_dir)) as url:
            take_screenshots(url, USERNAME, PASSWORD, options.out)
    return 0


def _environment(var_dir: Path) -> dict[str, str]:
    """Settings for a throwaway production-like site: its own SQLite file, no broker, not in demo mode."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"}
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "VAR_DIR": str(var_dir),
            # Set, so the page does not wear the demo banner (these scans are not the simulator's); nothing
            # polls it, as no worker runs.
            "PROTECTO_API_URL": "https://protecto-api.example.com",
            "PROTECTO_AUTH_TOKEN": "screenshot-placeholder-token",
            "SECRET_KEY": secrets.token_urlsafe(40),
            "LOG_LEVEL": "WARNING",
        }
    )
    return env


def _build_site() -> None:
    """Migrate the temporary database, collect the static files and fill in a realistic day."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("collectstatic", "--noinput", verbosity=0)
    get_user_model().objects.create_superuser(USERNAME, "ops@example.com", PASSWORD)
    _seed(random.Random(20261128))


def _seed(rng: random.Random) -> None:
    """About 60 scans over the last 24 h in every status, with their transitions and the poller's runs."""
    from django.utils import timezone

    from scans.models import Scan, ScanPoll, StatusChange

    now = timezone.now()
    plans = (
        [("SUCCESS", None)] * 33
        + [("FAILED", None)] * 9
        + [("IN-PROGRESS", None)] * 7
        + [("IN-PROGRESS", "stuck")]
        + [("PENDING", None)] * 5
        + [("PENDING", "stuck")]
        + [("NEW", "unanswered"), ("UNKNOWN", "odd status")]
        + [("SUCCESS", "archived"), ("FAILED", "archived")]
    )
    for n, (status, twist) in enumerate(plans):
        label, source, path = JOBS[n % len(JOBS)]
        scan = Scan(
            tracking_id=_tracking_id(rng, n),
            label=label,
            data_source=source,
            object_path=path,
            status=status,
        )
        changes, checked_at, next_check_at = _timeline(scan, twist, now, rng)
        if status == "FAILED":
            scan.error_message = rng.choice(ERRORS).format(source=source, path=path)
        scan.raw_status = {"UNKNOWN": "QUEUED_FOR_RETRY", "NEW": ""}.get(status, status)
        if twist == "unanswered":
            scan.last_check_error = "Not reported in Protecto's last answer"
            scan.check_failures = 0
        if twist == "archived":
            scan.archived_at = scan.ended_at + timedelta(minutes=rng.randint(5, 90))
        scan.last_raw_answer = None if twist == "unanswered" else _raw_answer(scan)
        scan.updated_at = max(checked_at or scan.created_at, scan.archived_at or scan.created_at)
        scan.save()
        ScanPoll.objects.filter(scan=scan).update(last_checked_at=checked_at, next_check_at=next_check_at)
        StatusChange.objects.bulk_create(
            StatusChange(scan=scan, from_status=old, to_status=new, raw_status=scan.raw_status, observed_at=at)
            for old, new, at in changes
        )
    _refresh_runs(now, rng)


def _tracking_id(rng: random.Random, n: int) -> str:
    """UUIDs as Protecto issued them in 2024; every fifth one in the 2025 shape (UUID plus a DDMMYYYYHHMMSS)."""
    base = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return base + f"{rng.randint(1, 28):02d}112026{rng.randint(0, 235959):06d}" if n % 5 == 3 else base


def _timeline(
    scan, twist: str | None, now: datetime, rng: random.Random
) -> tuple[list[tuple[str, str, datetime]], datetime | None, datetime | None]:
    """Fill the scan's API times and tracking fields; return the transitions the poller would have seen, and the
    poll row's last and next check."""
    poll = timedelta(seconds=30)
    if scan.status == "PENDING":
        waiting = timedelta(minutes=47) if twist == "stuck" else timedelta(seconds=rng.randint(20, 900))
        scan.submitted_at = now - waiting
    elif scan.status == "IN-PROGRESS":
        running = timedelta(hours=2, minutes=41) if twist == "stuck" else timedelta(seconds=rng.randint(60, 3000))
        scan.started_at = now - running
        scan.submitted_at = scan.started_at - timedelta(seconds=rng.randint(5, 400))
    elif scan.status in ("UNKNOWN", "NEW"):
        scan.submitted_at = None if twist == "unanswered" else now - timedelta(minutes=rng.randint(3, 25))
    else:
        scan.submitted_at = now - timedelta(minutes=rng.randint(40, 23 * 60 + 30))
        scan.started_at = scan.submitted_at + timedelta(seconds=rng.randint(5, 600))
        run = rng.choice([rng.randint(45, 600), rng.randint(300, 1800), rng.randint(1200, 5400)])
        scan.ended_at = min(scan.started_at + timedelta(seconds=run), now - timedelta(minutes=2))
    tracked = (scan.submitted_at or now - timedelta(minutes=9)) + timedelta(seconds=rng.randint(2, 20))
    scan.created_at = tracked
    changes: list[tuple[str, str, datetime]] = []
    seen = tracked + timedelta(seconds=rng.randint(1, 5))
    # A NEW scan was never answered, so the poller recorded no transition for it; an UNKNOWN one, only its first.
    if scan.status == "UNKNOWN":
        changes.append(("NEW", "UNKNOWN", seen))
    elif scan.status != "NEW":
        first = "PENDING" if scan.started_at is None or scan.started_at > seen else "IN-PROGRESS"
        changes.append(("NEW", first, seen))
        if first == "PENDING" and scan.started_at is not None:
            changes.append(("PENDING", "IN-PROGRESS", scan.started_at + _within(poll, rng)))
        if scan.ended_at is not None:
            changes.append(("IN-PROGRESS", scan.status, scan.ended_at + _within(poll, rng)))
    final = scan.status in ("SUCCESS", "FAILED")
    scan.last_changed_at = changes[-1][2] if changes else None
    checked_at = changes[-1][2] if final else now - _within(poll, rng)
    if twist == "unanswered":
        checked_at = None
    return changes, checked_at, None if final else now + _within(poll, rng)


def _within(span: timedelta, rng: random.Random) -> timedelta:
    return timedelta(seconds=rng.uniform(1, span.total_seconds()))


def _raw_answer(scan) -> dict:
    """The item as the 2024 status API shapes it: "-" for anything unset."""

    def stamp(value: datetime | None) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S.%f") if value else "-"

    return {
        "tracking_id": scan.tracking_id,
        "status": scan.raw_status or "QUEUED_FOR_RETRY",
        "submitted_at": stamp(scan.submitted_at),
        "process_started_at": stamp(scan.started_at),
        "process_ended_at": stamp(scan.ended_at),
        "error_msg": scan.error_message or "-",
    }


def _refresh_runs(now: datetime, rng: random.Random) -> None:
    """The poller's last few cycles, every 30 s, one of them with a failed batch."""
    from scans.models import RefreshRun

    for back in range(8, 0, -1):
        started = now - timedelta(seconds=30 * back + rng.randint(0, 4))
        partial = back == 5
        RefreshRun.objects.create(
            started_at=started,
            finished_at=started + timedelta(milliseconds=rng.randint(180, 900)),
            ids_asked=17,
            ids_answered=7 if partial else 17,
            changed=rng.randint(0, 3),
            api_calls=2,
            errors=1 if partial else 0,
            outcome=RefreshRun.Outcome.PARTIAL if partial else RefreshRun.Outcome.OK,
            error_text="Protecto answered HTTP 503 (after 3 retries)" if partial else "",
        )


@contextmanager
def _running_server(env: dict[str, str], var_dir: Path) -> Iterator[str]:
    """`manage.py runserver` on a free local port; yields its URL, stops it on exit, shows its log on failure."""
    port = _free_port()
    log_path = var_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_up(f"{url}/livez", process)
            yield url
        except BaseException:
            print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise RuntimeError(f"the server did not answer at {url} within {timeout:.0f}s")


def take_screenshots(url: str, username: str, password: str, out: Path) -> None:
    """Log in through the form; photograph the list, then the page of the newest failed scan."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            # Fixed locale, zone and motion, so the pictures only change when the pages do.
            context = browser.new_context(
                viewport=VIEWPORT, locale="en-GB", timezone_id="UTC", reduced_motion="reduce", color_scheme="light"
            )
            page = context.new_page()
            page.goto(f"{url}/login/")
            page.fill("#id_username", username)
            page.fill("#id_password", password)
            page.get_by_role("button", name="Log in", exact=True).click()
            expect(page.locator("#scan-table")).to_be_visible()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(out / "dashboard.png"))
            print(f"wrote {out / 'dashboard.png'}")

            page.goto(f"{url}/?status=FAILED")
            failed = page.locator("#scan-table tbody tr .id-cell a")
            if failed.count() == 0:
                print("no failed scan to show: docs/scan-page.png not taken")
                return
            failed.first.click()
            expect(page.locator("ol.timeline")).to_be_visible()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(out / "scan-page.png"))
            print(f"wrote {out / 'scan-page.png'}")
        finally:
            browser.close()


if __name__ == "__main__":
    sys.exit(main())
