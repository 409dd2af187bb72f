"""Demo seeding (demo/seed.py): real scans registered with a real simulator, once, and only in demo mode."""

import io

import pytest

from demo.seed import FINISHED, LIVE, LONG_RUNNING, DemoError, seed_demo
from scans.models import Scan

pytestmark = pytest.mark.django_db


def test_seeding_twice_adds_the_demo_scans_once(simulator, protecto_settings):
    protecto_settings.DEMO_MODE = True

    first = seed_demo(out=io.StringIO())
    tracked = set(Scan.objects.values_list("tracking_id", flat=True))
    second_out = io.StringIO()
    second = seed_demo(out=second_out)

    assert first == FINISHED + LONG_RUNNING + LIVE == len(tracked)
    assert second == 0 and "no demo scans added" in second_out.getvalue()
    assert set(Scan.objects.values_list("tracking_id", flat=True)) == tracked
    # The live scans were started through the async endpoint, the rest pinned over the control endpoint.
    assert len(simulator.submit_requests) == LIVE
    assert simulator.state()["scans"] == len(tracked)


def test_seeding_refreshes_once_so_the_dashboard_opens_with_statuses(simulator, protecto_settings):
    protecto_settings.DEMO_MODE = True

    seed_demo(out=io.StringIO())

    assert not Scan.objects.filter(status="UNKNOWN").exists()
    assert Scan.objects.filter(status="FAILED").exists() and Scan.objects.filter(status="SUCCESS").exists()


def test_seeding_refuses_outside_demo_mode_and_starts_nothing(simulator, protecto_settings):
    protecto_settings.DEMO_MODE = False

    with pytest.raises(DemoError, match="demo mode"):
        seed_demo(out=io.StringIO())

    assert not Scan.objects.exists()
    assert simulator.request_count == 0 and simulator.state()["scans"] == 0
