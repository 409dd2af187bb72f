"""Claims and runs of a worker that died: the lease runs from the claim and is short, a running run shows its
progress after every batch, and a run left `running` by a dead worker is closed as abandoned by the next cycle."""

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from scans.models import RefreshRun, Scan
from scans.refresh import claim_lease, protecto_client_from_settings, scans_refresh_due
from scans.services import scans_track
from tests.factories import make_refresh_run

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def wait_for(condition: Callable[[], object], *, timeout: float = 10.0) -> object:
    """Poll the database until `condition` returns something truthy; fail after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = condition()
        if found:
            return found
        time.sleep(0.02)
    pytest.fail("condition not met in time")


def in_background(**kwargs) -> tuple[threading.Thread, list[BaseException]]:
    """Run one refresh cycle in a thread (its own database connection), as a second worker would."""
    failures: list[BaseException] = []

    def cycle() -> None:
        try:
            scans_refresh_due(**kwargs)
        except BaseException as exc:  # reported by the test: a thread's exception would otherwise vanish
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=cycle)
    thread.start()
    return thread, failures


@pytest.mark.django_db
def test_the_lease_at_default_settings_is_about_two_minutes(settings):
    settings.PROTECTO_MAX_RETRIES = 3
    settings.PROTECTO_TIMEOUT_SECONDS = 10.0
    settings.PROTECTO_DEADLINE_SECONDS = 30.0
    settings.PROTECTO_BACKOFF_SECONDS = 0.5
    client = protecto_client_from_settings()

    lease = claim_lease(client)

    # A killed worker's scans stay frozen this long; it was 5 minutes.
    assert timedelta(seconds=100) <= lease <= timedelta(seconds=180)


@pytest.mark.django_db(transaction=True)
def test_a_claim_lease_runs_from_the_claim_not_from_the_cycle_start(simulator, protecto_settings):
    # A cycle that began long ago (its earlier batches were slow) claims a batch now: the batch gets a full lease.
    simulator.configure(latency=1.0)
    simulator.add_scan("scan-a", status="PENDING")
    cycle_start = timezone.now() - timedelta(minutes=10)
    scans_track(ids=["scan-a"], now=cycle_start - timedelta(minutes=1))
    lease = claim_lease(protecto_client_from_settings())
    before_claim = timezone.now()

    thread, failures = in_background(now=cycle_start)
    held = Scan.objects.select_related("poll").exclude(poll__claim_token="")
    claimed = wait_for(lambda: held.filter(tracking_id="scan-a").first())
    seen = timezone.now()
    thread.join(timeout=30)

    assert not failures
    assert before_claim + lease <= claimed.poll.next_check_at <= seen + lease
    assert Scan.objects.get(tracking_id="scan-a").status == Scan.Status.PENDING  # then written and released


@pytest.mark.django_db(transaction=True)
def test_a_running_cycle_shows_its_progress_after_each_batch(simulator, protecto_settings):
    simulator.configure(latency=1.0)
    ids = [f"scan-{n:02d}" for n in range(20)]
    for tracking_id in ids:
        simulator.add_scan(tracking_id, status="IN-PROGRESS")
    scans_track(ids=ids)

    thread, failures = in_background()
    # The first of two batches is written; the second is still waiting for its answer.
    midway = wait_for(lambda: RefreshRun.objects.filter(outcome="running", last_progress_at__isnull=False).first())
    thread.join(timeout=30)

    assert not failures
    assert (midway.ids_asked, midway.ids_answered, midway.changed) == (10, 10, 10)
    done = RefreshRun.objects.get(pk=midway.pk)
    assert (done.outcome, done.ids_asked) == ("ok", 20)
    assert done.last_progress_at > midway.last_progress_at


@pytest.mark.django_db
def test_a_run_left_running_without_progress_is_closed_as_abandoned(simulator, protecto_settings):
    running = RefreshRun.Outcome.RUNNING
    # A live cycle records progress after every batch, and a batch never outlasts the lease (80 s with the test
    # settings): a run silent for longer has lost its worker.
    never_progressed = make_refresh_run(outcome=running, finished_at=None, started_at=T0 - timedelta(minutes=10))
    stalled = make_refresh_run(
        outcome=running,
        finished_at=None,
        started_at=T0 - timedelta(minutes=30),
        last_progress_at=T0 - timedelta(minutes=6),
    )
    long_but_alive = make_refresh_run(
        outcome=running,
        finished_at=None,
        started_at=T0 - timedelta(minutes=30),
        last_progress_at=T0 - timedelta(minutes=1),
    )
    just_started = make_refresh_run(outcome=running, finished_at=None, started_at=T0 - timedelta(seconds=30))

    scans_refresh_due(now=T0)

    outcomes = dict(RefreshRun.objects.values_list("pk", "outcome"))
    assert outcomes[never_progressed.pk] == outcomes[stalled.pk] == "abandoned"
    assert outcomes[long_but_alive.pk] == outcomes[just_started.pk] == "running"
    closed = RefreshRun.objects.get(pk=stalled.pk)
    assert closed.finished_at == T0
    assert "no progress" in closed.error_text


@pytest.mark.django_db
def test_a_finished_run_is_never_reopened_or_abandoned(simulator, protecto_settings):
    old = make_refresh_run(started_at=T0 - timedelta(hours=2), finished_at=T0 - timedelta(hours=2))

    scans_refresh_due(now=T0)

    assert RefreshRun.objects.get(pk=old.pk).outcome == "ok"
