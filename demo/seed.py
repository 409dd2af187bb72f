"""Demo data: fill an empty demo dashboard with scans from the running simulator (demo mode only).

A day of finished scans is pinned in the simulator with past timestamps, a few long-running ones are planned to
stay busy, two are already stuck (waiting or running past the stuck limits), and the rest are started through
the simulator's Data Scan Async endpoint exactly as a real client would start them; they move from PENDING to
SUCCESS or FAILED within a minute or two. Everything is tracked through the product's own services, then
refreshed once so the dashboard opens with statuses. demo/feed.py keeps adding scans while `make run` runs.
"""

from __future__ import annotations

import random
import sys
import uuid
from datetime import timedelta
from typing import Any, TextIO

import requests
from django.conf import settings
from django.utils import timezone

from protecto import ProtectoError
from scans.models import Scan
from scans.refresh import protecto_client_from_settings, scans_refresh_due
from scans.services import scans_track

# (label, data source, object path) of the demo's recurring scan jobs.
JOBS = [
    ("Nightly CRM sweep", "salesforce", ["CustomerDB", "Marketingschema", "Customerstable"]),
    ("HR share audit", "sharepoint", ["HR", "Contracts"]),
    ("Warehouse PII check", "snowflake", ["ANALYTICS", "PUBLIC", "ORDERS"]),
    ("Support tickets", "zendesk", ["Tickets", "Comments"]),
    ("Data lake landing", "s3", ["landing-zone", "exports", "2026-11"]),
    ("Billing replica", "postgres", ["billing", "public", "invoices"]),
]
FAILURES = [
    "Connection to data source 'salesforce' timed out after 300s",
    "Permission denied reading object CustomerDB/Customerstable",
    "Schema changed during scan: column 'email' no longer exists",
    "Quota exceeded for tenant: 500000 samples per day",
]
FINISHED = 14
LONG_RUNNING = 3
STUCK = 2
LIVE = 23


class DemoError(RuntimeError):
    """The demo cannot be seeded; the message says why in one line."""


def seed_demo(*, out: TextIO | None = None, rng: random.Random | None = None) -> int:
    """Register the demo's scans with the simulator and track them; return how many were added.

    Adds nothing (and returns 0) when any scan is tracked already, so running it at every start is harmless.
    Refuses outside demo mode: the demo's scans must never be started on a real tenant.
    """
    out = out or sys.stdout
    if not settings.DEMO_MODE:
        raise DemoError("demo scans are only added in demo mode (DEMO_MODE=true), never against a real tenant")
    if Scan.objects.exists():
        out.write("Scans are tracked already; no demo scans added.\n")
        return 0
    rng = rng or random.Random()
    stuck = [stuck_spec(running=n % 2 == 0, rng=rng) for n in range(STUCK)]
    specs = _finished_specs(rng) + _long_running_specs(rng) + stuck
    simulator_add_scans(specs)
    started = _start_live_scans(rng)
    for label, _, _ in JOBS:
        ids = [spec["tracking_id"] for spec in specs if spec["label"] == label]
        ids += [tracking_id for tracking_id, job_label in started if job_label == label]
        scans_track(ids=ids, label=label)
    # A first refresh now, so the dashboard opens with statuses rather than a page of UNKNOWN.
    run = scans_refresh_due()
    out.write(
        f"Demo: {FINISHED} finished, {LONG_RUNNING} long-running, {STUCK} stuck and {len(started)} new scans "
        f"registered; first refresh: {run.get_outcome_display()}.\n"
    )
    return len(specs) + len(started)


def _finished_specs(rng: random.Random) -> list[dict[str, Any]]:
    """Scans that ended during the last day, pinned in the simulator as SUCCESS or FAILED."""
    now = timezone.now()
    specs = []
    for n in range(FINISHED):
        label, source, objects = JOBS[n % len(JOBS)]
        submitted = now - timedelta(minutes=rng.randint(30, 23 * 60))
        started = submitted + timedelta(seconds=rng.randint(5, 600))
        ended = started + timedelta(seconds=rng.randint(60, 3600))
        failed = n % 4 == 1
        specs.append(
            {
                "tracking_id": str(uuid.uuid4()),
                "label": label,
                "status": "FAILED" if failed else "SUCCESS",
                "submitted_at": submitted.isoformat(),
                "started_at": started.isoformat(),
                "ended_at": ended.isoformat(),
                "error_msg": rng.choice(FAILURES) if failed else "",
                "data_source": source,
                "object_name": objects,
            }
        )
    return specs


def _long_running_specs(rng: random.Random) -> list[dict[str, Any]]:
    """Scans planned to stay IN-PROGRESS for hours, so the dashboard always has something running."""
    specs = []
    for n in range(LONG_RUNNING):
        label, source, objects = JOBS[(n + 2) % len(JOBS)]
        specs.append(
            {
                "tracking_id": str(uuid.uuid4()),
                "label": label,
                "data_source": source,
                "object_name": objects,
                "pending_seconds": rng.randint(20, 60),
                "running_seconds": rng.randint(2 * 3600, 4 * 3600),
            }
        )
    return specs


def stuck_spec(*, running: bool, rng: random.Random) -> dict[str, Any]:
    """A scan already past the stuck limit (IN-PROGRESS if `running`, else PENDING) that stays so for a while.

    Planned, not pinned: it waits or runs 20-30 minutes past the limit, then succeeds, as a scan that was only
    slow would. The limits are the dashboard's own STUCK_* settings, so "stuck" is what the dashboard shows.
    """
    now = timezone.now()
    label, source, objects = rng.choice(JOBS)
    spec: dict[str, Any] = {
        "tracking_id": str(uuid.uuid4()),
        "label": label,
        "data_source": source,
        "object_name": objects,
    }
    if running:
        limit = settings.STUCK_RUNNING_MINUTES * 60
        spec.update(pending_seconds=60, running_seconds=limit + 30 * 60, outcome="SUCCESS")
        # Started (submitted + 60 s) two minutes past the limit ago: stuck at the first refresh.
        spec["submitted_at"] = (now - timedelta(seconds=limit + 120 + 60)).isoformat()
    else:
        limit = settings.STUCK_PENDING_MINUTES * 60
        spec.update(pending_seconds=limit + 20 * 60, running_seconds=60, outcome="SUCCESS")
        spec["submitted_at"] = (now - timedelta(seconds=limit + 120)).isoformat()
    return spec


def failing_spec(rng: random.Random) -> dict[str, Any]:
    """A new scan that waits a little, runs under a minute and fails (the simulator words the error)."""
    label, source, objects = rng.choice(JOBS)
    return {
        "tracking_id": str(uuid.uuid4()),
        "label": label,
        "data_source": source,
        "object_name": objects,
        "pending_seconds": rng.uniform(5, 20),
        "running_seconds": rng.uniform(10, 50),
        "outcome": "FAILED",
    }


def simulator_add_scans(specs: list[dict[str, Any]]) -> None:
    """Hand scans to the simulator's control endpoint (the real API has no such thing); DemoError if refused.

    A spec's "label" is the dashboard's, not the simulator's: it is left out of what is sent.
    """
    body = [{key: value for key, value in spec.items() if key != "label"} for spec in specs]
    try:
        response = requests.post(
            f"{settings.PROTECTO_API_URL}/_sim/scans",
            json=body,
            headers={"Authorization": f"Bearer {settings.PROTECTO_AUTH_TOKEN}"},
            timeout=10,
        )
    except requests.RequestException as exc:
        raise DemoError(f"the simulator did not answer at {settings.PROTECTO_API_URL}: {exc}") from None
    if response.status_code >= 300:
        raise DemoError(
            f"the simulator refused the demo scans (HTTP {response.status_code}): {response.text[:200]}"
        )


def _start_live_scans(rng: random.Random) -> list[tuple[str, str]]:
    """Start scans through Data Scan Async as a real client would; (tracking ID, job label) of each."""
    started = []
    with protecto_client_from_settings() as client:
        for n in range(LIVE):
            label, source, objects = JOBS[n % len(JOBS)]
            samples = [{"column_name": "email", "samples": [f"user{rng.randint(1, 999)}@example.com"]}]
            try:
                tracking_id = client.submit_scan(
                    data_source_name=source, object_name=objects, data_samples=samples
                )
            except ProtectoError as exc:
                raise DemoError(f"starting a demo scan failed: {exc}") from None
            started.append((tracking_id, label))
    return started
