"""The demo keeps moving (demo/feed.py): new scans for ever, now and then one that fails or is stuck."""

from __future__ import annotations

import io
import random
import time
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from demo.feed import ROUND, DemoFeed, demo_scan_start
from demo.seed import JOBS
from demo.simulator import ProtectoSimulator
from scans.models import Scan
from scans.refresh import scans_refresh_due
from tests.simulator_fixtures import fast_config

LABELS = {label for label, _, _ in JOBS}


class MovableClock:
    """The real time, until the test moves it on."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return timezone.now() + self.offset


@pytest.fixture
def demo_settings(protecto_settings):
    protecto_settings.DEMO_MODE = True
    return protecto_settings


@pytest.mark.django_db
def test_a_normal_demo_scan_is_started_as_a_client_starts_one_and_tracked(simulator, demo_settings):
    tracking_id = demo_scan_start(kind="normal", rng=random.Random(1))

    [request] = simulator.submit_requests
    assert request[0]["data_source_name"] in {source for _, source, _ in JOBS}
    assert Scan.objects.get(tracking_id=tracking_id).label in LABELS


@pytest.mark.django_db
@pytest.mark.parametrize("running, status", [(True, "IN-PROGRESS"), (False, "PENDING")])
def test_a_stuck_demo_scan_is_stuck_at_its_first_refresh(simulator, demo_settings, running, status):
    tracking_id = demo_scan_start(kind="stuck", rng=random.Random(2), stuck_running=running)

    scans_refresh_due()

    scan = Scan.objects.get(tracking_id=tracking_id)
    assert scan.status == status
    assert list(Scan.objects.stuck(timezone.now())) == [scan]


@pytest.mark.django_db
def test_a_failing_demo_scan_fails_within_about_a_minute(settings):
    clock = MovableClock()
    with ProtectoSimulator(fast_config(), clock=clock) as simulator:
        settings.DEMO_MODE = True
        settings.PROTECTO_API_URL, settings.PROTECTO_AUTH_TOKEN = simulator.url, simulator.config.token
        tracking_id = demo_scan_start(kind="failing", rng=random.Random(3))
        clock.offset = timedelta(seconds=71)  # past its longest wait (20 s) and run (50 s)

        scans_refresh_due()

    scan = Scan.objects.get(tracking_id=tracking_id)
    assert scan.status == "FAILED" and scan.error_message


def _wait_for(check, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)  # the feed writes from its own thread, on its own connection
def test_the_feed_adds_a_round_of_scans_with_one_failing_and_one_stuck_then_stops(simulator, demo_settings):
    out = io.StringIO()
    feed = DemoFeed(every=(0.01, 0.02), rng=random.Random(4), out=out).start()
    _wait_for(lambda: feed.added >= len(ROUND), 30)
    feed.stop()
    added = feed.added
    time.sleep(0.2)

    assert added >= len(ROUND) and feed.added == added  # stopped means stopped
    assert Scan.objects.count() == added
    normal_per_round = ROUND.count("normal")
    assert len(simulator.submit_requests) >= normal_per_round  # the rest went over the control endpoint
    scans_refresh_due()
    assert Scan.objects.stuck(timezone.now()).exists()
    assert out.getvalue() == ""  # all went well: nothing to say


@pytest.mark.django_db(transaction=True)
def test_the_feed_says_once_that_adding_fails_and_once_that_it_works_again(simulator, demo_settings):
    # The first scan is a normal one, started over the API: its two attempts (one retry) both get a 500.
    simulator.fail_next(2, "500")
    out = io.StringIO()
    feed = DemoFeed(every=(0.01, 0.02), rng=random.Random(5), out=out).start()
    _wait_for(lambda: feed.added >= 2, 30)
    feed.stop()

    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("demo: adding a new scan failed") and "will keep trying" in lines[0]
    assert lines[1] == "demo: adding new scans works again"
