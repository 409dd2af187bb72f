"""The refresh fans out over Celery: beat's tick claims batches up to the in-flight bound and sends one task per
batch; batch tasks add their counts to the run, claim the next batches and close the run when its last is done.
The last test runs two real worker processes on Redis against the simulator."""

import math
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from django.utils import timezone

from scans.models import RefreshRun, Scan, ScanPoll
from scans.refresh import (
    batches_allowed,
    batches_in_flight,
    refresh_after_batch,
    refresh_dispatch,
    refresh_finish,
    scans_refresh_batch,
    worker_client,
)
from scans.services import scans_track
from tests.factories import make_refresh_run, make_scan
from tests.test_celery import _database_url_for_subprocess

ROOT = Path(__file__).resolve().parent.parent


def track_active(simulator, count: int) -> list[str]:
    ids = [f"fan-{n:03d}" for n in range(count)]
    for tracking_id in ids:
        simulator.add_scan(tracking_id, status="IN-PROGRESS")
    scans_track(ids=ids, now=timezone.now() - timedelta(minutes=1))
    return ids


@pytest.mark.django_db
def test_a_tick_claims_batches_up_to_the_in_flight_bound_and_no_more(simulator, protecto_settings):
    protecto_settings.REFRESH_MAX_BATCHES_IN_FLIGHT = 2
    track_active(simulator, 35)

    first = refresh_dispatch()
    second = refresh_dispatch()

    assert len(first.tokens) == 2
    assert Scan.objects.exclude(poll__claim_token="").count() == 20  # two batches of 10
    assert all(token.startswith(f"{first.run.pk}-") for token in first.tokens)
    assert batches_in_flight(now=timezone.now()) == 2
    # At the bound the tick opens no run: the first run's batches go on claiming as they finish.
    assert (second.run, RefreshRun.objects.count()) == (None, 1)


@pytest.mark.django_db
def test_a_cycle_with_failed_batches_halves_the_bound_for_the_next_tick(settings):
    settings.REFRESH_MAX_BATCHES_IN_FLIGHT = 8
    make_refresh_run(errors=0)
    assert batches_allowed() == 8

    make_refresh_run(errors=2, outcome=RefreshRun.Outcome.PARTIAL)

    assert batches_allowed() == 4


@pytest.mark.django_db
def test_a_tick_with_nothing_due_closes_its_run_as_idle(simulator, protecto_settings):
    dispatch = refresh_dispatch()

    assert dispatch.tokens == []
    run = refresh_finish(run_id=dispatch.run.pk)
    assert (run.outcome, run.ids_asked) == ("idle", 0)


@pytest.mark.django_db
def test_the_last_batch_closes_the_run_once_with_the_sum_of_its_batches(simulator, protecto_settings):
    protecto_settings.REFRESH_MAX_BATCHES_IN_FLIGHT = 3
    track_active(simulator, 25)
    dispatch = refresh_dispatch()
    run_id = dispatch.run.pk

    results = []
    closers = []
    for token in dispatch.tokens:
        results.append(scans_refresh_batch(run_id=run_id, token=token))
        assert refresh_after_batch(result=results[-1]).tokens == []  # nothing left to claim
        closers.append(refresh_finish(run_id=run_id))

    assert [closer is not None for closer in closers] == [False, False, True]
    run = RefreshRun.objects.get(pk=run_id)
    assert run.outcome == "ok"
    assert (run.ids_asked, run.ids_answered, run.changed) == (25, 25, 25)
    assert run.ids_asked == sum(result.asked for result in results)
    assert run.api_calls == sum(result.api_calls for result in results) == 3
    assert refresh_finish(run_id=run_id) is None  # closed once


@pytest.mark.django_db
@pytest.mark.parametrize(("unknown_to_protecto", "outcome"), [(2, "ok"), (0, "ok")])
def test_scans_already_not_found_do_not_make_a_worker_run_degraded(
    simulator, protecto_settings, unknown_to_protecto, outcome
):
    # 8 answered of 10 asked is 80% coverage; but the 2 missing were NOT FOUND already, so nothing is missing.
    track_active(simulator, 10 - unknown_to_protecto)
    for n in range(unknown_to_protecto):
        make_scan(tracking_id=f"lost-{n}", status="NOT-FOUND", next_check_at=timezone.now() - timedelta(seconds=1))
        simulator.override_answer(f"lost-{n}", [])  # still unknown to Protecto
    dispatch = refresh_dispatch()
    for token in dispatch.tokens:
        scans_refresh_batch(run_id=dispatch.run.pk, token=token)

    run = refresh_finish(run_id=dispatch.run.pk)

    assert (run.outcome, run.ids_asked, run.ids_answered) == (outcome, 10, 10 - unknown_to_protecto)
    assert (run.batches_ok, run.ids_expected) == (1, 10 - unknown_to_protecto)


@pytest.mark.django_db
def test_a_worker_run_with_missing_answers_is_degraded_like_an_in_process_one(simulator, protecto_settings):
    track_active(simulator, 10)
    for tracking_id in ("fan-000", "fan-001"):
        simulator.override_answer(tracking_id, [])  # not reported, and not NOT FOUND yet
    dispatch = refresh_dispatch()
    for token in dispatch.tokens:
        scans_refresh_batch(run_id=dispatch.run.pk, token=token)

    run = refresh_finish(run_id=dispatch.run.pk)

    assert (run.outcome, run.ids_answered, run.ids_expected) == ("degraded", 8, 10)


@pytest.mark.django_db
def test_a_finished_batch_claims_the_next_while_its_run_is_the_newest(simulator, protecto_settings):
    protecto_settings.REFRESH_MAX_BATCHES_IN_FLIGHT = 1
    track_active(simulator, 15)
    dispatch = refresh_dispatch()

    follow = refresh_after_batch(result=scans_refresh_batch(run_id=dispatch.run.pk, token=dispatch.tokens[0]))

    assert len(follow.tokens) == 1
    assert Scan.objects.filter(poll__claim_token=follow.tokens[0]).count() == 5
    assert refresh_finish(run_id=dispatch.run.pk) is None  # its follow-up batch is still claimed


@pytest.mark.django_db
def test_a_run_claims_only_what_was_due_at_its_tick(simulator, protecto_settings):
    # So a run ends even when the workers are saturated; what fell due meanwhile is the next tick's run.
    protecto_settings.REFRESH_MAX_BATCHES_IN_FLIGHT = 1
    track_active(simulator, 15)
    dispatch = refresh_dispatch()
    now = timezone.now()
    RefreshRun.objects.filter(pk=dispatch.run.pk).update(started_at=now - timedelta(minutes=2))
    ScanPoll.objects.filter(claim_token="").update(next_check_at=now - timedelta(minutes=1))

    follow = refresh_after_batch(result=scans_refresh_batch(run_id=dispatch.run.pk, token=dispatch.tokens[0]))

    assert follow.tokens == []
    assert refresh_finish(run_id=dispatch.run.pk) is not None


@pytest.mark.django_db
def test_a_batch_polled_late_in_its_cycle_is_due_again_at_the_next_tick(simulator, protecto_settings):
    # Next checks count from the tick: counted from the batch, a scan polled 20 s into a 30 s cycle would miss
    # the next tick's grace and be checked only every other interval.
    track_active(simulator, 5)
    tick = timezone.now()
    dispatch = refresh_dispatch(now=tick)
    late = tick + timedelta(seconds=20)

    scans_refresh_batch(run_id=dispatch.run.pk, token=dispatch.tokens[0], now=late)

    next_tick = tick + timedelta(seconds=protecto_settings.REFRESH_INTERVAL_SECONDS)
    assert set(ScanPoll.objects.values_list("last_checked_at", flat=True)) == {late}
    assert ScanPoll.objects.due(next_tick).count() == 5


@pytest.mark.django_db
def test_a_worker_process_keeps_one_client_until_the_settings_change(protecto_settings):
    client = worker_client()
    assert worker_client() is client  # one keep-alive session for every batch of this process

    protecto_settings.PROTECTO_TIMEOUT_SECONDS = 3.0

    assert worker_client() is not client


def _start_worker(name: str, queue: str, env: dict, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "--pool", "solo", "-n", name]
    command += ["-Q", queue, "--without-mingle", "--without-gossip", "--loglevel", "INFO"]
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def _wait_for(condition, *, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_share_one_cycle_and_poll_each_due_scan_once(redis_url, simulator, tmp_path):
    simulator.configure(latency=0.3)
    active = track_active(simulator, 40)
    for n in range(3):
        simulator.add_scan(f"done-{n}", status="SUCCESS")
        make_scan(f"done-{n}", status=Scan.Status.SUCCESS, next_check_at=None)
    queue = f"test-fanout-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DATABASE_URL": _database_url_for_subprocess(),
        "REDIS_URL": redis_url,
        "PROTECTO_API_URL": simulator.url,
        "PROTECTO_AUTH_TOKEN": simulator.config.token,
        "PROTECTO_BATCH_SIZE": "5",
        "REFRESH_MAX_BATCHES_IN_FLIGHT": "3",
        "VAR_DIR": str(tmp_path),
        "LOG_LEVEL": "DEBUG",  # the "task succeeded" lines counted below are hidden at INFO
    }
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    workers = [_start_worker(f"fan{n}-{queue}@%h", queue, env, log) for n, log in enumerate(logs, 1)]
    most_in_flight = 0
    try:
        _wait_for(lambda: all("ready." in log.read_text() for log in logs), timeout=60, what="both workers")
        Celery("producer", broker=redis_url, set_as_current=False).send_task(
            "scans.tasks.refresh_due_scans", queue=queue
        )

        def run_closed() -> bool:
            nonlocal most_in_flight
            assert all(worker.poll() is None for worker in workers)
            most_in_flight = max(most_in_flight, batches_in_flight(now=timezone.now()))
            return RefreshRun.objects.exclude(outcome="running").exists()

        _wait_for(run_closed, timeout=60, what="the run to close")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=20)

    outputs = [log.read_text() for log in logs]
    run = RefreshRun.objects.get()
    assert run.outcome == RefreshRun.Outcome.OK, outputs
    asked = [tracking_id for batch in simulator.status_requests for tracking_id in batch]
    assert sorted(asked) == sorted(active)  # every due scan exactly once, no finished scan ever
    assert run.api_calls == len(simulator.status_requests) == math.ceil(len(active) / 5)
    # Both workers ran batches; what each batch reported adds up to the run's totals.
    ran = [
        sum("scans.tasks.refresh_batch[" in line and "succeeded in" in line for line in output.splitlines())
        for output in outputs
    ]
    print("batches run by each worker:", ran)
    assert all(ran) and sum(ran) == run.api_calls, outputs
    reported = [line for output in outputs for line in output.splitlines() if "'asked': " in line]
    assert sum(int(line.split("'asked': ")[1].split(",")[0]) for line in reported) == run.ids_asked == 40
    assert most_in_flight <= 3
