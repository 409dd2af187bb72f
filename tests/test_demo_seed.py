"""Demo seeding (demo/seed.py): real scans registered with a real simulator, once, and only in demo mode."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.utils import timezone

from demo.seed import FINISHED, LIVE, LONG_RUNNING, STUCK, DemoError, seed_demo
from scans.models import Scan
from scans.refresh import scans_refresh_due
from tests.ports import free_port

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent
SEEDED = FINISHED + LONG_RUNNING + STUCK + LIVE
# Order of a scan's life; a later answer may only keep or raise the rank.
RANK = {"PENDING": 0, "IN-PROGRESS": 1, "SUCCESS": 2, "FAILED": 2}


def test_seeding_twice_adds_the_demo_scans_once(simulator, protecto_settings):
    protecto_settings.DEMO_MODE = True

    first = seed_demo(out=io.StringIO())
    tracked = set(Scan.objects.values_list("tracking_id", flat=True))
    second_out = io.StringIO()
    second = seed_demo(out=second_out)

    assert first == SEEDED == len(tracked)
    assert second == 0 and "no demo scans added" in second_out.getvalue()
    assert set(Scan.objects.values_list("tracking_id", flat=True)) == tracked
    # The live scans were started through the async endpoint, the rest pinned over the control endpoint.
    assert len(simulator.submit_requests) == LIVE
    assert simulator.state()["scans"] == len(tracked)


def test_seeding_refreshes_once_so_the_dashboard_opens_with_statuses(simulator, protecto_settings):
    protecto_settings.DEMO_MODE = True

    seed_demo(out=io.StringIO())

    assert not Scan.objects.filter(status__in=["NEW", "UNKNOWN"]).exists()
    assert Scan.objects.filter(status="FAILED").exists() and Scan.objects.filter(status="SUCCESS").exists()


def test_a_fresh_demo_shows_a_stuck_running_and_a_stuck_pending_scan(simulator, protecto_settings):
    protecto_settings.DEMO_MODE = True

    seed_demo(out=io.StringIO())

    stuck = Scan.objects.stuck(timezone.now())
    assert sorted(stuck.values_list("status", flat=True)) == ["IN-PROGRESS", "PENDING"]


def test_seeding_refuses_outside_demo_mode_and_starts_nothing(simulator, protecto_settings):
    protecto_settings.DEMO_MODE = False

    with pytest.raises(DemoError, match="demo mode"):
        seed_demo(out=io.StringIO())

    assert not Scan.objects.exists()
    assert simulator.request_count == 0 and simulator.state()["scans"] == 0


# --- a restarted simulator never rewinds the demo ---------------------------------------------------------------


class SimulatorProcess:
    """`python -m demo.simulator` as `make run` starts it (state file, quiet), on a fixed port, restartable."""

    def __init__(self, port: int, state_file: Path) -> None:
        self.port, self.state_file = port, state_file
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "demo.simulator", "--port", str(self.port), "--quiet"]
        # Plans of a few seconds, so some scans end before the restart and some are still on their way.
        command += ["--state-file", str(self.state_file), "--pending-seconds", "0,2", "--running-seconds", "1,8"]
        env = {**os.environ, "SIMULATOR_TOKEN": "restart-token", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        assert "serving on" in self.process.stdout.readline()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)

    def statuses(self, ids: list[str]) -> dict[str, str]:
        """What the simulator answers for these IDs now, over its real API."""
        response = requests.put(
            f"{self.url}/data-scan-status",
            json=ids,
            headers={"Authorization": "Bearer restart-token"},
            timeout=5,
        )
        return {item["tracking_id"]: item["status"].strip() for item in response.json()["data"]}


@pytest.fixture
def simulator_process(tmp_path, settings) -> Iterator[SimulatorProcess]:
    process = SimulatorProcess(free_port(), tmp_path / "simulator-state.json")
    process.start()
    settings.DEMO_MODE = True
    settings.PROTECTO_API_URL = process.url
    settings.PROTECTO_AUTH_TOKEN = "restart-token"
    settings.PROTECTO_MAX_RETRIES = 1
    settings.PROTECTO_BACKOFF_SECONDS = 0.05
    yield process
    process.stop()


def _dashboard_statuses() -> dict[str, str]:
    return dict(Scan.objects.values_list("tracking_id", "status"))


def test_restarting_the_simulator_never_sends_a_tracked_scan_back(simulator_process):
    seed_demo(out=io.StringIO())
    ids = list(_dashboard_statuses())
    # Let some of the live scans finish while others are still waiting or running.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        before = simulator_process.statuses(ids)
        finished_live = sum(RANK[status] == 2 for status in before.values()) - FINISHED
        if finished_live >= 3 and any(RANK[status] < 2 for status in before.values()):
            break
        time.sleep(0.5)
    scans_refresh_due(ignore_schedule=True)
    dashboard_before = _dashboard_statuses()

    simulator_process.stop()
    simulator_process.start()
    after = simulator_process.statuses(ids)
    scans_refresh_due(ignore_schedule=True)

    assert finished_live >= 3, "no live scan finished before the restart; the test proved nothing"
    assert sorted(after) == sorted(ids)  # every tracked scan is still known: none is re-created as new
    went_back = {tracking_id: (before[tracking_id], after[tracking_id]) for tracking_id in ids}
    assert {k: v for k, v in went_back.items() if RANK[v[1]] < RANK[v[0]]} == {}
    assert all(after[k] == before[k] for k in ids if RANK[before[k]] == 2)  # finished scans end as they ended
    dashboard_after = _dashboard_statuses()
    assert {k: v for k, v in dashboard_before.items() if RANK[dashboard_after[k]] < RANK[v]} == {}
    assert not Scan.objects.exclude(answer_warning="").exists()  # no answer was refused as a step backwards


def test_the_state_file_is_written_as_scans_are_added(simulator_process):
    seed_demo(out=io.StringIO())

    saved = json.loads(simulator_process.state_file.read_text())

    tracked = set(Scan.objects.values_list("tracking_id", flat=True))
    assert tracked and tracked <= {record["tracking_id"] for record in saved["scans"]}
