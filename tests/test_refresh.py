"""The refresh service against the simulator over real HTTP, on the real database."""

import io
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from scans.models import RefreshRun, Scan, StatusChange
from scans.refresh import scans_refresh_due
from scans.services import scans_track

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def track(*ids: str) -> None:
    scans_track(ids=ids, now=T0 - timedelta(minutes=1))


def refresh(at: datetime = T0, **kwargs) -> RefreshRun:
    return scans_refresh_due(now=at, **kwargs)


def test_first_answer_records_status_times_and_one_transition(simulator, protecto_settings):
    simulator.add_scan(
        "scan-a",
        status="IN-PROGRESS",
        submitted_at=T0 - timedelta(minutes=10),
        started_at=T0 - timedelta(minutes=4),
    )
    track("scan-a")

    run = refresh()

    scan = Scan.objects.get(tracking_id="scan-a")
    assert scan.status == Scan.Status.IN_PROGRESS
    assert scan.queue_wait == timedelta(minutes=6)
    assert scan.poll.last_checked_at == T0
    assert scan.last_changed_at == T0
    assert scan.poll.next_check_at == T0 + timedelta(seconds=30)
    assert list(StatusChange.objects.values_list("from_status", "to_status")) == [("NEW", "IN-PROGRESS")]
    assert (run.outcome, run.ids_asked, run.ids_answered, run.changed, run.api_calls) == ("ok", 1, 1, 1, 1)


def test_transitions_are_recorded_exactly_once(simulator, protecto_settings):
    simulator.add_scan("scan-a", status="PENDING", submitted_at=T0 - timedelta(minutes=2))
    track("scan-a")

    refresh(T0)
    refresh(T0 + timedelta(seconds=30))  # nothing changed in between
    simulator.set_status("scan-a", "IN-PROGRESS")
    refresh(T0 + timedelta(seconds=60))
    refresh(T0 + timedelta(seconds=90))
    simulator.set_status("scan-a", "SUCCESS")
    refresh(T0 + timedelta(seconds=120))
    refresh(T0 + timedelta(seconds=150))

    steps = list(StatusChange.objects.values_list("from_status", "to_status", "observed_at"))
    assert steps == [
        ("NEW", "PENDING", T0),
        ("PENDING", "IN-PROGRESS", T0 + timedelta(seconds=60)),
        ("IN-PROGRESS", "SUCCESS", T0 + timedelta(seconds=120)),
    ]


def test_terminal_scans_are_never_polled_again(simulator, protecto_settings):
    simulator.add_scan(
        "done-ok",
        status="SUCCESS",
        submitted_at=T0 - timedelta(hours=1),
        started_at=T0 - timedelta(minutes=50),
        ended_at=T0 - timedelta(minutes=5),
    )
    simulator.add_scan("done-bad", status="FAILED", error_msg="Permission denied")
    simulator.add_scan("running", status="IN-PROGRESS")
    track("done-ok", "done-bad", "running")
    refresh(T0)
    simulator.reset_log()

    later = refresh(T0 + timedelta(minutes=5))
    everything = refresh(T0 + timedelta(minutes=10), ignore_schedule=True)

    asked = [tracking_id for batch in simulator.status_requests for tracking_id in batch]
    assert asked == ["running", "running"]
    assert (later.ids_asked, everything.ids_asked) == (1, 1)
    assert Scan.objects.get(tracking_id="done-ok").poll.next_check_at is None
    assert Scan.objects.get(tracking_id="done-bad").error_message == "Permission denied"


def test_scans_are_asked_in_batches_of_the_configured_size(simulator, protecto_settings):
    ids = [f"batch-{n:02d}" for n in range(25)]
    for tracking_id in ids:
        simulator.add_scan(tracking_id, status="PENDING")
    track(*ids)

    run = refresh()

    assert [len(batch) for batch in simulator.status_requests] == [10, 10, 5]
    assert (run.ids_asked, run.ids_answered, run.api_calls) == (25, 25, 3)


def test_each_batch_marks_its_scans_with_the_time_it_wrote_them(simulator, protecto_settings):
    # An open page sees news by the newest updated_at: a later batch stamped with the cycle's start would be
    # invisible to a page that polled between two batches.
    ids = [f"batch-{n:02d}" for n in range(25)]
    for tracking_id in ids:
        simulator.add_scan(tracking_id, status="PENDING")
    track(*ids)
    before = timezone.now()

    refresh(T0)

    stamps = dict(Scan.objects.values_list("tracking_id", "updated_at"))
    assert all(stamp >= before for stamp in stamps.values())
    assert stamps["batch-24"] >= stamps["batch-00"]


def test_a_tick_a_moment_early_still_polls_scans_checked_one_interval_ago(simulator, protecto_settings):
    simulator.add_scan("scan-a", status="PENDING")
    track("scan-a")
    refresh(T0)

    early = refresh(T0 + timedelta(seconds=29))  # beat's ticks drift by a second or so
    too_early = refresh(T0 + timedelta(seconds=40))  # checked at :29, next due at :59

    assert (early.ids_asked, too_early.ids_asked) == (1, 0)


def test_a_malformed_answer_changes_nothing_and_the_next_cycle_recovers(simulator, protecto_settings):
    simulator.add_scan("scan-a", status="PENDING")
    track("scan-a")
    refresh(T0)
    simulator.set_status("scan-a", "FAILED", error_msg="Schema changed during scan")
    simulator.configure(malformed_rate=1.0)

    broken = refresh(T0 + timedelta(seconds=30))

    scan = Scan.objects.get(tracking_id="scan-a")
    assert broken.outcome == RefreshRun.Outcome.FAILED
    assert "JSON" in broken.error_text
    assert scan.status == Scan.Status.PENDING
    assert "JSON" in scan.last_check_error
    assert scan.poll.next_check_at == T0 + timedelta(seconds=60)

    simulator.configure(malformed_rate=0.0)
    recovered = refresh(T0 + timedelta(seconds=60))

    scan.refresh_from_db()
    assert recovered.outcome == RefreshRun.Outcome.OK
    assert (scan.status, scan.error_message, scan.last_check_error) == ("FAILED", "Schema changed during scan", "")
    assert scan.poll.next_check_at is None


def test_one_failed_batch_does_not_stop_the_others(simulator, protecto_settings):
    ids = [f"scan-{n:02d}" for n in range(20)]
    for tracking_id in ids:
        simulator.add_scan(tracking_id, status="IN-PROGRESS")
    track(*ids)
    # The first batch gets a 500 on the attempt and on its one retry; the second batch is answered.
    simulator.fail_next(2, kind="500")

    run = refresh()

    assert run.outcome == RefreshRun.Outcome.PARTIAL
    assert (run.ids_asked, run.ids_answered, run.errors, run.api_calls) == (20, 10, 1, 3)
    assert Scan.objects.filter(status="IN-PROGRESS").count() == 10
    assert Scan.objects.filter(status="NEW", check_failures=1).count() == 10


def test_a_down_api_stops_the_cycle_after_three_failed_batches(simulator, protecto_settings):
    ids = [f"scan-{n:02d}" for n in range(60)]
    track(*ids)
    simulator.configure(error_rate=1.0)

    run = refresh()

    assert run.outcome == RefreshRun.Outcome.FAILED
    assert (run.ids_asked, run.errors, run.api_calls) == (30, 3, 6)
    assert "3 failed batches in a row" in run.error_text
    # The 30 scans not asked keep their schedule: they are due again at the next cycle, not pushed back.
    assert Scan.objects.filter(check_failures=0, poll__next_check_at__lte=T0).count() == 30


def test_an_id_the_answer_leaves_out_stays_as_it_was(simulator, protecto_settings):
    simulator.configure(accept_unknown_ids=False)
    simulator.add_scan("known", status="PENDING")
    track("known", "vanished")
    refresh(T0)

    scan = Scan.objects.get(tracking_id="vanished")
    assert scan.status == Scan.Status.NEW
    assert scan.poll.last_checked_at is None
    assert "Not reported" in scan.last_check_error
    assert scan.poll.next_check_at == T0 + timedelta(seconds=30)
    assert Scan.objects.get(tracking_id="known").status == Scan.Status.PENDING


def test_a_known_value_is_never_overwritten_with_a_blank(simulator, protecto_settings):
    submitted = T0 - timedelta(minutes=3)
    simulator.add_scan(
        "scan-a", status="IN-PROGRESS", submitted_at=submitted, started_at=T0 - timedelta(minutes=1)
    )
    track("scan-a")
    refresh(T0)
    # The API now answers "-" for the submission time: what we already knew stays.
    simulator.add_scan("scan-a", status="IN-PROGRESS", submitted_at=None)
    assert simulator.answer_item("scan-a")["submitted_at"] in ("-", None)

    refresh(T0 + timedelta(seconds=30))

    scan = Scan.objects.get(tracking_id="scan-a")
    assert scan.submitted_at == submitted
    assert scan.poll.last_checked_at == T0 + timedelta(seconds=30)


def test_an_unknown_status_value_is_kept_raw(simulator, protecto_settings):
    simulator.add_scan("scan-a", status="QUEUED_FOR_RETRY")
    track("scan-a")

    refresh()

    scan = Scan.objects.get(tracking_id="scan-a")
    assert (scan.status, scan.raw_status) == ("UNKNOWN", "QUEUED_FOR_RETRY")
    assert scan.poll.next_check_at is not None


def test_a_refused_token_is_recorded_and_changes_nothing(simulator, protecto_settings):
    protecto_settings.PROTECTO_AUTH_TOKEN = "wrong-token-abcdef"
    simulator.add_scan("scan-a", status="SUCCESS")
    track("scan-a", "scan-b")

    run = refresh()

    assert run.outcome == RefreshRun.Outcome.AUTH_REFUSED
    assert run.api_calls == 1  # no retries, and no second batch: it would be refused the same way
    assert "refused" in run.error_text.lower()
    assert "wrong-token-abcdef" not in run.error_text
    assert not Scan.objects.exclude(status="NEW").exists()


def test_an_unreachable_api_is_recorded_as_failed(protecto_settings):
    protecto_settings.PROTECTO_API_URL = "http://127.0.0.1:9"  # the discard port: nothing listens
    track("scan-a")

    run = refresh()

    assert run.outcome == RefreshRun.Outcome.FAILED
    assert Scan.objects.get(tracking_id="scan-a").check_failures == 1


def test_nothing_due_is_an_idle_cycle_without_api_calls(simulator, protecto_settings):
    run = refresh()

    assert (run.outcome, run.api_calls) == ("idle", 0)
    assert simulator.status_requests == []


@pytest.mark.parametrize("size", [5, 100])
def test_queries_per_batch_do_not_grow_with_the_batch_size(
    simulator, protecto_settings, django_assert_max_num_queries, size
):
    protecto_settings.PROTECTO_BATCH_SIZE = size
    ids = [f"scan-{n:03d}" for n in range(size)]
    for n, tracking_id in enumerate(ids):
        simulator.add_scan(
            tracking_id, status="FAILED" if n % 2 else "IN-PROGRESS", error_msg="boom" if n % 2 else None
        )
    track(*ids)

    # One full batch: run start, claim (3), write (7 with savepoints: scans, their poll rows, changes), run finish.
    with django_assert_max_num_queries(15):
        run = refresh()

    assert run.changed == size
    assert StatusChange.objects.count() == size


def test_refresh_command_prints_what_it_did(simulator, protecto_settings):
    simulator.add_scan("scan-a", status="PENDING")
    scans_track(ids=["scan-a"])
    out = io.StringIO()

    call_command("refresh_scans", stdout=out)

    assert "checked 1, answered 1, changed 1, failed batches 0, unsaved scans 0, API calls 1: OK (ok)" in (
        out.getvalue()
    )


def test_refresh_command_exits_non_zero_when_the_api_fails(simulator, protecto_settings):
    simulator.configure(error_rate=1.0)
    scans_track(ids=["scan-a"])

    with pytest.raises(CommandError, match="API failing"):
        call_command("refresh_scans", "--all", stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.parametrize(("answered", "outcome"), [(0, "failed"), (1, "degraded")])
def test_refresh_command_exits_non_zero_when_answers_cover_too_few_ids(
    simulator, protecto_settings, answered, outcome
):
    # A cron job or a script must not take a blind cycle for a good one.
    for n, tracking_id in enumerate(["scan-a", "scan-b", "scan-c"]):
        simulator.override_answer(tracking_id, [{"tracking_id": tracking_id, "status": "PENDING"}][: n < answered])
    scans_track(ids=["scan-a", "scan-b", "scan-c"])
    out = io.StringIO()

    with pytest.raises(CommandError, match=f"refresh ended {outcome}"):
        call_command("refresh_scans", stdout=out, stderr=io.StringIO())

    assert f"answered {answered}," in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_refreshes_never_poll_one_scan_twice(simulator, protecto_settings):
    # Slow answers keep both refreshes in flight together, so their claims overlap in time.
    simulator.configure(latency=0.1)
    ids = [f"scan-{n:03d}" for n in range(150)]
    for tracking_id in ids:
        simulator.add_scan(tracking_id, status="IN-PROGRESS")
    scans_track(ids=ids)
    runs: list[RefreshRun] = []
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def worker() -> None:
        try:
            start.wait()
            runs.append(scans_refresh_due(now=timezone.now() + timedelta(seconds=1)))
        except BaseException as exc:  # reported below: a thread's exception would otherwise vanish
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not failures
    asked = [tracking_id for batch in simulator.status_requests for tracking_id in batch]
    assert sorted(asked) == sorted(ids)  # every scan polled, none twice
    assert sum(run.ids_asked for run in runs) == 150
    assert StatusChange.objects.count() == 150
    assert all(run.ids_asked > 0 for run in runs), [run.ids_asked for run in runs]


def test_the_refresh_asks_for_statuses_at_the_configured_path(simulator, protecto_settings):
    # The simulator answers only at the other path, so a refresh that ignored the setting would get a 404.
    simulator.configure(status_paths=("/data-scan/status",))
    protecto_settings.PROTECTO_STATUS_PATH = "/data-scan/status"
    simulator.add_scan("scan-a", status="SUCCESS")
    track("scan-a")

    run = refresh()

    assert (run.outcome, run.ids_answered) == (RefreshRun.Outcome.OK, 1)
    assert Scan.objects.get(tracking_id="scan-a").status == Scan.Status.SUCCESS


def test_a_poll_that_changed_nothing_does_not_mark_the_scan_changed(simulator, protecto_settings):
    # updated_at drives the live page's cheap "nothing changed": a poll with no news must leave it alone.
    simulator.add_scan("scan-a", status="IN-PROGRESS")
    track("scan-a")
    refresh(T0)
    first = Scan.objects.get(tracking_id="scan-a")

    refresh(T0 + timedelta(seconds=30))

    again = Scan.objects.get(tracking_id="scan-a")
    assert again.updated_at == first.updated_at
    assert (again.poll.last_checked_at, again.poll.last_reported_at) == (T0 + timedelta(seconds=30),) * 2
    assert again.poll.next_check_at > T0 + timedelta(seconds=30)
    assert again.poll.claim_token == ""


def test_a_poll_that_clears_a_shown_error_marks_the_scan_changed(simulator, protecto_settings):
    simulator.add_scan("scan-a", status="IN-PROGRESS")
    track("scan-a")
    refresh(T0)
    Scan.objects.filter(tracking_id="scan-a").update(check_failures=2, last_check_error="timed out")
    before = Scan.objects.get(tracking_id="scan-a").updated_at

    refresh(T0 + timedelta(seconds=30))

    scan = Scan.objects.get(tracking_id="scan-a")
    assert (scan.check_failures, scan.last_check_error) == (0, "")
    assert scan.updated_at > before


@pytest.mark.parametrize("size", [10, 100])
def test_a_batch_of_unchanged_scans_costs_at_most_four_statements(
    simulator, protecto_settings, django_assert_max_num_queries, size
):
    from scans.refresh import refresh_dispatch, scans_refresh_batch

    protecto_settings.PROTECTO_BATCH_SIZE = size
    protecto_settings.REFRESH_MAX_BATCHES_IN_FLIGHT = 1
    ids = [f"scan-{n:03d}" for n in range(size)]
    for tracking_id in ids:
        simulator.add_scan(tracking_id, status="IN-PROGRESS")
    track(*ids)
    refresh(T0)
    at = T0 + timedelta(seconds=30)
    dispatch = refresh_dispatch(now=at)

    # Load the batch, one narrow UPDATE for all of it, the run's counts: the same at 10 and at 100 scans.
    with django_assert_max_num_queries(4) as queries:
        result = scans_refresh_batch(run_id=dispatch.run.pk, token=dispatch.tokens[0], now=at)

    assert (result.asked, result.answered, result.changed) == (size, size, 0)
    assert Scan.objects.filter(poll__last_checked_at=at, poll__claim_token="").count() == size
    writes = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("UPDATE")]
    assert writes and not any('"scans_scan"' in sql.split(" SET ")[0] for sql in writes)  # poll rows only
