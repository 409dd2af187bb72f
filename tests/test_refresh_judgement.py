"""Answers are judged, not trusted: coverage, NOT FOUND, a forward-only lifecycle, duplicate IDs, cleared errors,
values a database can't hold, per-scan write isolation, the raw-answer cap and the token's redaction.

Every answer here comes over real HTTP from the simulator, which sends exactly the raw items a test gives it
(`override_answer`), and is written to the real database (SQLite, or PostgreSQL with DATABASE_URL).
"""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from scans.judgement import RAW_ANSWER_MAX_BYTES
from scans.models import RefreshRun, Scan, StatusChange
from scans.refresh import scans_refresh_due
from scans.services import scans_track

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    """T0 moved by `minutes` (negative: before T0)."""
    return T0 + timedelta(minutes=minutes)


def stamp(minutes: float) -> str:
    """The time `minutes` after T0 as Protecto writes it (no zone: read in PROTECTO_TIMEZONE, UTC here)."""
    return at(minutes).strftime("%Y-%m-%d %H:%M:%S.%f")


def item(tracking_id: str, status: str, *, submitted=None, started=None, ended=None, error="-", **extra) -> dict:
    """One raw item in the 2024 shape; times are minutes after T0."""
    return {
        "tracking_id": tracking_id,
        "status": status,
        "submitted_at": "-" if submitted is None else stamp(submitted),
        "process_started_at": "-" if started is None else stamp(started),
        "process_ended_at": "-" if ended is None else stamp(ended),
        "error_msg": error,
        **extra,
    }


def track(*ids: str) -> None:
    scans_track(ids=ids, now=at(-1))


def answer(simulator, tracking_id: str, *items: dict) -> None:
    simulator.override_answer(tracking_id, list(items))


def refresh(when: datetime = T0) -> RefreshRun:
    return scans_refresh_due(now=when)


def scan(tracking_id: str = "scan-a") -> Scan:
    return Scan.objects.get(tracking_id=tracking_id)


def steps(tracking_id: str = "scan-a") -> list[tuple[str, str]]:
    return list(StatusChange.objects.filter(scan__tracking_id=tracking_id).values_list("from_status", "to_status"))


# --- coverage ---------------------------------------------------------------------------------------------------


def test_an_empty_answer_for_all_fourteen_ids_asked_is_a_failed_cycle(simulator, protecto_settings):
    ids = [f"scan-{n:02d}" for n in range(14)]
    track(*ids)
    for tracking_id in ids:
        answer(simulator, tracking_id)  # reported by nobody: {"data": []}

    run = refresh()

    assert (run.outcome, run.ids_asked, run.ids_answered, run.errors) == ("failed", 14, 0, 0)
    assert "reported 0 of 14" in run.error_text


@pytest.mark.parametrize(
    ("answered", "outcome"),
    [(14, "ok"), (13, "ok"), (12, "degraded"), (6, "degraded"), (1, "degraded")],
)
def test_a_cycle_whose_answers_cover_too_few_ids_is_degraded(simulator, protecto_settings, answered, outcome):
    # 90% of 14 is 12.6: 13 answered is enough, 12 is not.
    ids = [f"scan-{n:02d}" for n in range(14)]
    track(*ids)
    for n, tracking_id in enumerate(ids):
        answer(simulator, tracking_id, *([item(tracking_id, "PENDING")] if n < answered else []))

    run = refresh()

    assert (run.outcome, run.ids_asked, run.ids_answered) == (outcome, 14, answered)


def test_ids_already_not_found_do_not_count_against_coverage(simulator, protecto_settings):
    # They were judged and alerted once; their absence is expected and must not make every cycle degraded.
    track("known", "gone")
    Scan.objects.filter(tracking_id="gone").update(status=Scan.Status.NOT_FOUND)
    answer(simulator, "known", item("known", "PENDING"))
    answer(simulator, "gone")

    run = refresh()

    assert (run.outcome, run.ids_asked, run.ids_answered) == ("ok", 2, 1)


# --- NOT FOUND ------------------------------------------------------------------------------------------------


def test_an_id_never_reported_for_the_configured_hours_becomes_not_found(simulator, protecto_settings):
    protecto_settings.NOT_FOUND_AFTER_HOURS = 24
    track("scan-a")  # tracked at T0 - 1 min
    answer(simulator, "scan-a")

    refresh(at(24 * 60 - 2))
    assert scan().status == Scan.Status.NEW

    refresh(at(24 * 60))

    found = scan()
    assert found.status == Scan.Status.NOT_FOUND
    assert steps() == [("NEW", "NOT-FOUND")]
    assert "has not reported this ID since it was tracked" in found.last_check_error
    assert found.poll.next_check_at == at(24 * 60) + timedelta(seconds=30)


def test_an_id_counts_from_its_last_report_and_keeps_what_it_knew_until_then(simulator, protecto_settings):
    protecto_settings.NOT_FOUND_AFTER_HOURS = 24
    track("scan-a")
    answer(simulator, "scan-a", item("scan-a", "IN-PROGRESS", submitted=-10, started=-5))
    refresh(T0)
    assert scan().poll.last_reported_at == T0
    answer(simulator, "scan-a")

    refresh(at(24 * 60 - 1))
    assert scan().status == Scan.Status.IN_PROGRESS
    refresh(at(24 * 60))

    found = scan()
    assert found.status == Scan.Status.NOT_FOUND
    assert found.started_at == at(-5)
    assert found.poll.last_reported_at == T0
    assert "since 2026-11-28 09:00 UTC" in found.last_check_error
    assert steps() == [("NEW", "IN-PROGRESS"), ("IN-PROGRESS", "NOT-FOUND")]


def test_a_not_found_id_is_polled_with_doubling_backoff_up_to_an_hour(simulator, protecto_settings):
    protecto_settings.NOT_FOUND_AFTER_HOURS = 1
    track("scan-a")
    answer(simulator, "scan-a")
    when = at(60)
    refresh(when)
    assert scan().status == Scan.Status.NOT_FOUND
    gaps = []

    for _ in range(9):
        due = scan().poll.next_check_at
        gaps.append((due - when).total_seconds())
        # A cycle before it is due does not ask for it.
        assert refresh(due - timedelta(seconds=10)).ids_asked == 0
        when = due
        assert refresh(when).ids_asked == 1

    assert gaps == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert steps() == [("NEW", "NOT-FOUND")]  # polled on, never re-entered


def test_a_not_found_id_reported_again_takes_the_reported_status(simulator, protecto_settings):
    protecto_settings.NOT_FOUND_AFTER_HOURS = 1
    track("scan-a")
    answer(simulator, "scan-a")
    refresh(at(60))
    refresh(at(60.5))  # one backoff step: check_failures 1
    answer(simulator, "scan-a", item("scan-a", "IN-PROGRESS", submitted=50, started=55))

    refresh(at(61.5))

    back = scan()
    assert back.status == Scan.Status.IN_PROGRESS
    assert (back.last_check_error, back.check_failures, back.poll.last_reported_at) == ("", 0, at(61.5))
    assert back.poll.next_check_at == at(61.5) + timedelta(seconds=30)
    assert steps() == [("NEW", "NOT-FOUND"), ("NOT-FOUND", "IN-PROGRESS")]


def test_a_not_found_id_reported_without_a_status_is_no_longer_not_found(simulator, protecto_settings):
    protecto_settings.NOT_FOUND_AFTER_HOURS = 1
    track("scan-a")
    answer(simulator, "scan-a")
    refresh(at(60))
    answer(simulator, "scan-a", {"tracking_id": "scan-a", "submitted_at": stamp(50)})

    refresh(at(60.5))

    assert (scan().status, scan().submitted_at) == ("UNKNOWN", at(50))
    assert steps() == [("NEW", "NOT-FOUND"), ("NOT-FOUND", "UNKNOWN")]


# --- a forward-only lifecycle ---------------------------------------------------------------------------------


def test_a_stale_pending_after_in_progress_is_not_applied_and_is_recorded(simulator, protecto_settings):
    track("scan-a")
    answer(simulator, "scan-a", item("scan-a", "IN-PROGRESS", submitted=-10, started=-5))
    refresh(T0)
    answer(simulator, "scan-a", item("scan-a", "PENDING", submitted=-10))

    refresh(at(0.5))

    kept = scan()
    assert (kept.status, kept.started_at, kept.poll.next_check_at) == ("IN-PROGRESS", at(-5), at(1))
    assert "ignored PENDING after IN-PROGRESS" in kept.answer_warning
    assert kept.answer_warning.startswith("2026-11-28 09:00 UTC:")
    assert (kept.poll.last_checked_at, kept.poll.last_reported_at) == (at(0.5), at(0.5))
    assert steps() == [("NEW", "IN-PROGRESS")]


def test_a_genuine_resubmission_moves_the_scan_back_and_says_so(simulator, protecto_settings):
    track("scan-a")
    answer(simulator, "scan-a", item("scan-a", "IN-PROGRESS", submitted=-10, started=-5))
    refresh(T0)
    # The API's own submission time is later than the one we hold: a new attempt, not a stale answer.
    answer(simulator, "scan-a", item("scan-a", "PENDING", submitted=0.2))

    refresh(at(0.5))

    again = scan()
    assert (again.status, again.submitted_at, again.started_at) == ("PENDING", at(0.2), None)
    assert "resubmitted at 2026-11-28 09:00:12 UTC: applied PENDING after IN-PROGRESS" in again.answer_warning
    assert steps() == [("NEW", "IN-PROGRESS"), ("IN-PROGRESS", "PENDING")]


def test_an_unrecognised_status_never_overwrites_a_known_one(simulator, protecto_settings):
    track("scan-a")
    answer(simulator, "scan-a", item("scan-a", "PENDING", submitted=-3))
    refresh(T0)
    answer(simulator, "scan-a", item("scan-a", "QUEUED_FOR_RETRY", submitted=-3, error="requeued"))

    refresh(at(0.5))

    kept = scan()
    assert (kept.status, kept.raw_status, kept.error_message) == ("PENDING", "PENDING", "")
    assert 'ignored unrecognised status "QUEUED_FOR_RETRY"; kept PENDING' in kept.answer_warning


# --- duplicate IDs in one answer ------------------------------------------------------------------------------


@pytest.mark.parametrize("stray_first", [True, False])
def test_a_stray_failed_beside_a_newer_in_progress_does_not_finalise_the_scan(
    simulator, protecto_settings, stray_first
):
    track("scan-a")
    answer(simulator, "scan-a", item("scan-a", "IN-PROGRESS", submitted=-20, started=-15))
    refresh(T0)
    running = item("scan-a", "IN-PROGRESS", submitted=-20, started=-4)
    # An earlier attempt that failed before the current one started: every one of its times is older.
    stray = item("scan-a", "FAILED", submitted=-20, started=-15, ended=-10, error="worker lost")
    answer(simulator, "scan-a", *([stray, running] if stray_first else [running, stray]))

    refresh(at(0.5))

    kept = scan()
    assert (kept.status, kept.started_at, kept.error_message) == ("IN-PROGRESS", at(-4), "")
    assert kept.poll.next_check_at == at(1)  # still polled
    assert "ID listed 2 times" in kept.answer_warning
    assert "kept IN-PROGRESS" in kept.answer_warning
    assert steps() == [("NEW", "IN-PROGRESS")]


@pytest.mark.parametrize("success_first", [True, False])
def test_between_two_final_items_the_later_end_wins(simulator, protecto_settings, success_first):
    track("scan-a")
    success = item("scan-a", "SUCCESS", submitted=-20, started=-15, ended=-1)
    failure = item("scan-a", "FAILED", submitted=-20, started=-15, ended=-3, error="disk full")
    answer(simulator, "scan-a", *([success, failure] if success_first else [failure, success]))

    refresh()

    final = scan()
    assert (final.status, final.ended_at, final.error_message) == ("SUCCESS", at(-1), "")
    assert "ID listed 2 times" in final.answer_warning


def test_duplicates_without_timestamps_keep_the_most_advanced(simulator, protecto_settings):
    track("scan-a")
    answer(simulator, "scan-a", item("scan-a", "IN-PROGRESS"), item("scan-a", "PENDING"))

    refresh()

    assert scan().status == Scan.Status.IN_PROGRESS
    assert steps() == [("NEW", "IN-PROGRESS")]


def test_identical_duplicates_are_no_conflict(simulator, protecto_settings):
    track("scan-a")
    same = item("scan-a", "PENDING", submitted=-2)
    answer(simulator, "scan-a", same, same)

    refresh()

    assert (scan().status, scan().answer_warning) == ("PENDING", "")


# --- the current answer's error -------------------------------------------------------------------------------


@pytest.mark.parametrize("cleared", ["-", "", "   ", None])
def test_an_error_the_answer_clears_is_no_longer_shown(simulator, protecto_settings, cleared):
    track("scan-a")
    answer(simulator, "scan-a", item("scan-a", "IN-PROGRESS", started=-5, error="worker lost, retrying"))
    refresh(T0)
    assert scan().error_message == "worker lost, retrying"
    answer(simulator, "scan-a", item("scan-a", "SUCCESS", started=-5, ended=0, error=cleared))

    refresh(at(0.5))

    done = scan()
    assert (done.status, done.error_message) == ("SUCCESS", "")
    # The timeline keeps no errors, so the old one stays readable in the warning.
    assert "error cleared; it was: worker lost, retrying" in done.answer_warning


# --- values a database can't hold -----------------------------------------------------------------------------


def test_nul_bytes_are_removed_from_every_field_and_the_scan_is_saved(simulator, protecto_settings):
    track("scan-a")
    answer(
        simulator,
        "scan-a",
        item(
            "scan-a",
            "FAILED",
            ended=-1,
            error="disk\x00 full",
            input_payload={"data_source_name": "snow\x00flake", "object_name": ["DB\x00", "T"]},
            **{"note\x00": "a\x00b"},
        ),
    )

    run = refresh()

    saved = scan()
    assert run.outcome == "ok"
    assert (saved.status, saved.error_message, saved.data_source, saved.object_path) == (
        "FAILED",
        "disk full",
        "snowflake",
        "DB/T",
    )
    assert "\\u0000" not in json.dumps(saved.last_raw_answer)
    assert saved.last_raw_answer["note"] == "ab"
    assert "NUL bytes removed from error_message, data_source, object_path" in saved.answer_warning


@pytest.mark.parametrize(
    ("sent", "problem"),
    [
        ("0001-01-01T00:00:00+05:30", "outside the range a database can hold"),  # year 0 in UTC
        ("9999-12-31T23:00:00-05:00", "outside the range a database can hold"),  # year 10000 in UTC
        ("1900-01-01 00:00:00", "not a plausible time"),
        ("2999-01-01 00:00:00", "not a plausible time"),
    ],
)
def test_a_timestamp_that_cannot_be_stored_is_ignored_and_the_old_value_kept(
    simulator, protecto_settings, sent, problem
):
    track("scan-a")
    answer(simulator, "scan-a", item("scan-a", "IN-PROGRESS", submitted=-10, started=-5))
    refresh(T0)
    bad = item("scan-a", "SUCCESS", submitted=-10, ended=-1)
    bad["process_started_at"] = sent
    answer(simulator, "scan-a", bad)

    run = refresh(at(0.5))

    saved = scan()
    assert (run.outcome, run.write_failures) == ("ok", 0)
    assert (saved.status, saved.started_at, saved.ended_at) == ("SUCCESS", at(-5), at(-1))
    assert "started_at " in saved.answer_warning
    assert f"ignored: {problem}" in saved.answer_warning


def test_nan_and_infinity_in_the_raw_answer_are_stored_as_text(simulator, protecto_settings):
    # Python's JSON reads NaN; PostgreSQL's jsonb refuses it, which would fail the whole batch.
    track("scan-a")
    answer(simulator, "scan-a", item("scan-a", "PENDING", progress=float("nan"), eta=[float("inf")]))

    run = refresh()

    saved = scan()
    assert (run.outcome, saved.status) == ("ok", "PENDING")
    assert (saved.last_raw_answer["progress"], saved.last_raw_answer["eta"]) == ("nan", ["inf"])
    assert "non-finite numbers written as text" in saved.answer_warning


def test_overlong_text_is_cut_to_its_column(simulator, protecto_settings):
    track("scan-a")
    answer(
        simulator,
        "scan-a",
        item(
            "scan-a",
            "X" * 300,
            input_payload={"data_source_name": "s" * 1000, "object_name": ["o" * 2000]},
        ),
    )

    run = refresh()

    saved = scan()
    assert (run.outcome, run.write_failures) == ("ok", 0)
    assert (len(saved.raw_status), len(saved.data_source), len(saved.object_path)) == (64, 200, 500)
    assert saved.data_source.endswith("… (cut)")


# --- one bad row costs one scan -------------------------------------------------------------------------------

POISON = "poison/table"


@pytest.fixture
def poisoned_rows():
    """A trigger that makes the database refuse any scan row whose object_path becomes POISON.

    It stands for any value that passes our checks and still breaks the write (a constraint we did not foresee).
    """
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.object_path = '{POISON}' THEN RAISE EXCEPTION 'row refused'; END IF; RETURN NEW; "
                "END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                "CREATE TRIGGER refuse_poison BEFORE UPDATE ON scans_scan "
                "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER refuse_poison BEFORE UPDATE ON scans_scan "
                f"WHEN NEW.object_path = '{POISON}' BEGIN SELECT RAISE(ABORT, 'row refused'); END"
            )
    # The test's transaction is rolled back at its end, and the trigger with it.


def poisoned_item(tracking_id: str) -> dict:
    return item(
        tracking_id, "IN-PROGRESS", started=-2, input_payload={"data_source_name": "s", "object_name": POISON}
    )


def test_a_row_the_database_refuses_costs_that_scan_alone(simulator, protecto_settings, poisoned_rows):
    track("scan-a", "scan-b", "scan-c", "scan-d")
    answer(simulator, "scan-a", item("scan-a", "IN-PROGRESS", started=-3))
    answer(simulator, "scan-b", poisoned_item("scan-b"))
    answer(simulator, "scan-c", item("scan-c", "SUCCESS", started=-3, ended=-1))
    answer(simulator, "scan-d", item("scan-d", "UNKNOWN-TO-US"))

    run = refresh()

    assert (run.outcome, run.write_failures, run.errors) == ("partial", 1, 0)
    assert "1 scan(s) could not be saved" in run.error_text
    assert (scan("scan-a").status, scan("scan-c").status, scan("scan-d").raw_status) == (
        "IN-PROGRESS",
        "SUCCESS",
        "UNKNOWN-TO-US",
    )
    refused = scan("scan-b")
    assert (refused.status, refused.object_path, refused.poll.claim_token) == ("NEW", "", "")
    assert refused.last_check_error.startswith("Could not save Protecto's answer:")
    assert "row refused" in refused.last_check_error
    assert (refused.check_failures, refused.poll.next_check_at) == (1, at(0.5))
    assert steps("scan-b") == []


def test_a_batch_none_of_whose_scans_could_be_written_is_a_failed_cycle(
    simulator, protecto_settings, poisoned_rows
):
    track("scan-b")
    answer(simulator, "scan-b", poisoned_item("scan-b"))

    run = refresh()

    assert (run.outcome, run.write_failures, run.errors) == ("failed", 1, 1)
    assert scan("scan-b").poll.next_check_at == at(0.5)


# --- bounded and redacted -------------------------------------------------------------------------------------


def test_a_huge_error_is_stored_capped_and_the_scan_page_stays_small(simulator, protecto_settings, viewer_client):
    track("scan-a")
    answer(simulator, "scan-a", item("scan-a", "FAILED", ended=-1, error="E" * 10_000_000))

    run = refresh()

    saved = scan()
    assert run.outcome == "ok"
    assert saved.status == Scan.Status.FAILED
    assert 0 < len(saved.error_message) <= 4000
    raw = saved.last_raw_answer
    assert raw["truncated"] is True
    assert raw["bytes"] > 10_000_000
    assert raw["head"].startswith('{"tracking_id": "scan-a"')
    assert len(json.dumps(raw, ensure_ascii=False).encode()) <= RAW_ANSWER_MAX_BYTES
    page = viewer_client.get("/scans/scan-a/")
    assert page.status_code == 200
    assert len(page.content) < 100_000


def test_a_token_the_api_echoes_is_stored_redacted_and_shown_nowhere(
    simulator, protecto_settings, viewer_client, admin_client
):
    token = simulator.config.token
    track("scan-a")
    echoed = item(
        "scan-a",
        "FAILED",
        submitted=-10,
        ended=-1,
        error=f"auth failed for Bearer {token}",
        input_payload={"data_source_name": f"src-{token}", "object_name": [token, "T"]},
        **{f"key-{token}": token},
    )
    # A second, older item whose status is the token: its text reaches the duplicate warning.
    answer(simulator, "scan-a", echoed, item("scan-a", token, submitted=-10))

    refresh()

    saved = scan()
    stored = [getattr(saved, name) for name in Scan.ANSWER_FIELDS] + [saved.answer_warning]
    assert token not in json.dumps(stored, default=str)
    assert saved.error_message == "auth failed for Bearer ***"
    assert (saved.data_source, saved.object_path) == ("src-***", "***/T")
    assert "***" in saved.answer_warning
    for page in (
        viewer_client.get("/scans/scan-a/"),
        viewer_client.get("/"),
        admin_client.get(f"/admin/scans/scan/{saved.pk}/change/"),
    ):
        assert page.status_code == 200
        assert token.encode() not in page.content


@pytest.mark.parametrize("size", [8, 100])
def test_queries_per_judged_batch_do_not_grow_with_the_batch_size(
    simulator, protecto_settings, django_assert_max_num_queries, size
):
    # One batch holding every kind of news: unchanged, a warned step backwards, a new NOT FOUND, unreported.
    protecto_settings.PROTECTO_BATCH_SIZE = size
    protecto_settings.NOT_FOUND_AFTER_HOURS = 0.01  # 36 s
    ids = [f"scan-{n:03d}" for n in range(size)]
    kinds = {tracking_id: ("same", "back", "gone", "young")[n % 4] for n, tracking_id in enumerate(ids)}
    track(*ids)
    Scan.objects.filter(tracking_id__in=[i for i, kind in kinds.items() if kind == "young"]).update(
        created_at=at(0.5)
    )
    for tracking_id, kind in kinds.items():
        first = [] if kind == "young" else [item(tracking_id, "IN-PROGRESS", submitted=-9, started=-5)]
        answer(simulator, tracking_id, *first)
    refresh(T0)
    for tracking_id, kind in kinds.items():
        later = {"same": "IN-PROGRESS", "back": "PENDING"}.get(kind)
        answer(simulator, tracking_id, *([item(tracking_id, later, submitted=-9, started=-5)] if later else []))

    # Scans and their poll rows are written apart: the changed ones in two bulk updates, the unreported in two.
    with django_assert_max_num_queries(18):
        run = refresh(at(1))

    assert run.ids_asked == size
    statuses = {kind: set() for kind in ("same", "back", "gone", "young")}
    for tracking_id, status in Scan.objects.values_list("tracking_id", "status"):
        statuses[kinds[tracking_id]].add(status)
    assert statuses == {
        "same": {"IN-PROGRESS"},
        "back": {"IN-PROGRESS"},
        "gone": {"NOT-FOUND"},
        "young": {"NEW"},
    }
    assert Scan.objects.exclude(answer_warning="").count() == size // 4
