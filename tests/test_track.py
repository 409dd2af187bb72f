"""Registering tracking IDs: the service and the `track` command."""

import io

import pytest
from django.core.management import call_command

from scans.models import Scan, tracking_id_problem
from scans.services import scans_track

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
    assert "' '" in lines[1]
    assert "200 characters long; the limit is 128" in lines[2]
    assert "2 added, 0 already tracked, 3 rejected" in out


def test_track_reports_duplicates_without_failing():
    scans_track(ids=[UUID_ID])

    code, out, err = run_track(UUID_ID, LONG_2025_ID, LONG_2025_ID)

    assert code == 0
    assert err == ""
    assert "1 added, 2 already tracked, 0 rejected" in out
    assert Scan.objects.count() == 2


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
    code, _, _ = run_track("-", "id_4", stdin="id_5 id_6\n", monkeypatch=monkeypatch)

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


def test_new_scans_start_unknown_and_due_at_once():
    result = scans_track(ids=[UUID_ID])

    scan = Scan.objects.get(tracking_id=UUID_ID)
    assert result.added == [UUID_ID]
    assert scan.status == Scan.Status.UNKNOWN
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
