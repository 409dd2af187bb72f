"""Registering tracking IDs: the service and the `track` command, which reads input as the Add page does and
has new scans refreshed at once."""

import io

import pytest
from django.core.management import call_command

from scans.models import Scan, tracking_id_problem
from scans.services import scans_track
from tests.ports import free_port

pytestmark = pytest.mark.django_db

UUID_ID = "47882682-9f38-4f45-afec-daadaa1b230b"
LONG_2025_ID = "354d2d30-178a-4220-9ce5-97908aa5713015052025072328"


def run_track(*args, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    try:
        call_command("track", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_track_rejects_script_spaces_and_overlong_ids_but_stores_the_valid_ones():
    code, out, err = run_track(UUID_ID, "<script>alert(1)</script>", "has space", "x" * 200, LONG_2025_ID)

    assert code == 1
    assert set(Scan.objects.values_list("tracking_id", flat=True)) == {UUID_ID, LONG_2025_ID}
    lines = err.strip().splitlines()
    assert len(lines) == 3
    assert "'<'" in lines[0] and "only letters, digits" in lines[0]
    assert lines[1].startswith("rejected         'has space': contains spaces")
    assert "200 characters long; the limit is 128" in lines[2]
    assert "2 added, 0 already tracked, 0 repeated, 3 rejected" in out


def test_track_reports_repeats_apart_from_already_tracked_ids_without_failing():
    scans_track(ids=[UUID_ID])

    code, out, err = run_track(UUID_ID, LONG_2025_ID, LONG_2025_ID)

    assert code == 0
    assert err == ""
    assert f"already tracked  {UUID_ID}" in out.splitlines()
    assert f"repeated         {LONG_2025_ID} (given more than once; added once)" in out.splitlines()
    assert "1 added, 1 already tracked, 1 repeated, 0 rejected" in out
    assert Scan.objects.count() == 2


def test_the_service_reports_an_id_given_twice_as_repeated_not_already_tracked():
    result = scans_track(ids=["svc-1", "svc-1", "svc-2"])

    assert (result.added, result.repeated, result.already_tracked) == (["svc-1", "svc-2"], ["svc-1"], [])


def test_a_line_with_spaces_in_a_file_is_one_rejection_not_several_ids(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("bad id with spaces\nid_1\n")

    code, _, err = run_track("--file", str(path))

    assert code == 1
    assert list(Scan.objects.values_list("tracking_id", flat=True)) == ["id_1"]
    assert err.strip().splitlines() == [
        "rejected         'bad id with spaces': contains spaces; put one ID per line, or separate IDs with commas"
    ]


def test_track_takes_ids_out_of_links_and_tracking_id_text(monkeypatch):
    pasted = f'https://tenant.protecto.ai/app/data-scan/{UUID_ID}?tab=1\ntracking_id: {LONG_2025_ID}\n"id_7"\n'

    code, _, _ = run_track("-", stdin=pasted, monkeypatch=monkeypatch)

    assert code == 0
    assert sorted(Scan.objects.values_list("tracking_id", flat=True)) == sorted([UUID_ID, LONG_2025_ID, "id_7"])


def test_track_reads_a_semicolon_csv_with_its_header_and_labels(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("Tracking ID;Label\r\ncsv_1;Finanzen, Q3\r\ncsv_2;\r\n", encoding="utf-8-sig")

    code, out, err = run_track("--file", str(path), "--label", "default")

    assert (code, err) == (0, "")
    assert sorted(Scan.objects.values_list("tracking_id", "label")) == [
        ("csv_1", "Finanzen, Q3"),
        ("csv_2", "default"),
    ]
    assert "2 added, 0 already tracked, 0 repeated, 0 rejected" in out


@pytest.mark.django_db(transaction=True)  # committed, as from a shell: the refresh request goes out at once
def test_scans_added_by_track_are_refreshed_at_once(simulator, protecto_settings, eager_celery):
    simulator.add_scan(UUID_ID, status="FAILED", error_msg="Schema changed during scan")
    simulator.add_scan(LONG_2025_ID, status="SUCCESS")

    code, out, _ = run_track(UUID_ID, LONG_2025_ID)

    assert code == 0
    assert "Refresh queued: a worker polls the new scans now." in out
    statuses = dict(Scan.objects.values_list("tracking_id", "status"))
    assert statuses == {UUID_ID: Scan.Status.FAILED, LONG_2025_ID: Scan.Status.SUCCESS}


@pytest.mark.django_db(transaction=True)
def test_track_says_when_the_task_queue_is_unreachable_and_leaves_the_scans_due(settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/1"  # nothing listens there

    code, _, err = run_track(UUID_ID)

    assert code == 0
    assert "The task queue is unreachable: the new scans are polled at the next refresh cycle." in err
    assert Scan.objects.get(tracking_id=UUID_ID).poll.next_check_at is not None


def test_nothing_is_queued_when_track_adds_nothing(django_capture_on_commit_callbacks):
    scans_track(ids=[UUID_ID])

    with django_capture_on_commit_callbacks() as callbacks:
        code, out, _ = run_track(UUID_ID)

    assert (code, callbacks) == (0, [])
    assert "Refresh" not in out


def test_track_reads_ids_from_standard_input_with_a_label(monkeypatch):
    code, _, _ = run_track(
        "--file",
        "-",
        "--label",
        "nightly CRM",
        stdin=f"{UUID_ID}\n{LONG_2025_ID}, id_3\n",
        monkeypatch=monkeypatch,
    )

    assert code == 0
    assert sorted(Scan.objects.values_list("tracking_id", "label")) == sorted(
        [(UUID_ID, "nightly CRM"), (LONG_2025_ID, "nightly CRM"), ("id_3", "nightly CRM")]
    )


def test_track_dash_reads_standard_input_too(monkeypatch):
    code, _, _ = run_track("-", "id_4", stdin="id_5\tid_6\n", monkeypatch=monkeypatch)

    assert code == 0
    assert sorted(Scan.objects.values_list("tracking_id", flat=True)) == ["id_4", "id_5", "id_6"]


def test_track_reads_ids_from_a_file(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text(f"{UUID_ID}\n\n{LONG_2025_ID}\n")

    code, _, _ = run_track("--file", str(path))

    assert code == 0
    assert Scan.objects.count() == 2


def test_track_with_a_missing_file_says_so_without_a_traceback(tmp_path):
    with pytest.raises(Exception, match=r"Cannot read .*missing\.txt"):
        call_command("track", "--file", str(tmp_path / "missing.txt"))


def test_new_scans_start_not_checked_yet_and_due_at_once():
    result = scans_track(ids=[UUID_ID])

    scan = Scan.objects.get(tracking_id=UUID_ID)
    assert result.added == [UUID_ID]
    assert scan.status == Scan.Status.NEW
    assert scan.poll.next_check_at is not None and scan.poll.next_check_at <= scan.created_at


@pytest.mark.parametrize(
    "value, problem",
    [
        ("", "is empty"),
        ("a" * 128, None),
        ("a" * 129, "is 129 characters long; the limit is 128"),
        ("abc_DEF-123", None),
        ("ünïcode", "contains"),
        ("a/b", "contains '/'"),
    ],
)
def test_tracking_id_rules(value, problem):
    found = tracking_id_problem(value)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
