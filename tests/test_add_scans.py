"""Adding scans: pasted IDs and CSV files, an answer for every ID, clear errors for bad input, and a refresh
at once (a real eager refresh against the simulator) so new scans show a status right away."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from scans.models import Scan
from tests.factories import make_scan
from tests.helpers import page_text, parse_html

pytestmark = pytest.mark.django_db


def results(response) -> list[tuple[str, str, str]]:
    """(tracking ID as shown, result, reason or note) for each row of the results table."""
    rows = []
    for row in parse_html(response).select('section[aria-label="Results"] tbody tr'):
        shown, outcome = row.find_all("td")
        badge = outcome.select_one("span.badge")
        note = "".join(outcome.find_all(string=True, recursive=False))
        rows.append((shown.get_text(), badge.get_text(), note.strip()))
    return rows


def tracked() -> dict[str, str]:
    return dict(Scan.objects.values_list("tracking_id", "label"))


def csv_file(content: bytes, name: str = "ids.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="text/csv")


def add(client, **data):
    response = client.post("/add/", data)
    assert response.status_code == 200
    return response


def test_the_add_page_offers_a_textarea_a_csv_upload_and_a_label(operator_client):
    form = parse_html(operator_client.get("/add/")).select_one("form.add-form")

    assert form["method"] == "post" and form["enctype"] == "multipart/form-data"
    assert form.select_one('textarea[name="ids"]') is not None
    assert form.select_one('input[type="file"][name="csv_file"]') is not None
    assert form.select_one('input[name="label"]')["maxlength"] == "200"


def test_pasted_ids_may_be_separated_by_newlines_commas_semicolons_or_spaces(operator_client):
    response = add(operator_client, ids="id-1\nid-2, id-3;id-4 id-5\r\n\tid-6,,\n\n", label="pasted")

    assert tracked() == {f"id-{n}": "pasted" for n in range(1, 7)}
    assert "6 added, 0 already tracked, 0 rejected" in page_text(response)


def test_every_id_gets_its_own_result_with_the_reason_for_a_rejection(operator_client):
    make_scan("known-1", label="kept")
    too_long = "x" * 129

    response = add(operator_client, ids=f"new-1 known-1 new-1 bad<id> {too_long}", label="fresh")

    assert "1 added, 2 already tracked, 2 rejected" in page_text(response)
    assert results(response) == [
        ("new-1", "Added", "refreshing now"),
        ("new-1", "Already tracked", ""),  # pasted twice
        ("known-1", "Already tracked", ""),
        ("bad<id>", "Rejected", "contains '<', '>'; only letters, digits, '-' and '_' are allowed"),
        ("x" * 79 + "…", "Rejected", "is 129 characters long; the limit is 128"),
    ]
    assert "bad&lt;id&gt;" in response.content.decode()  # what was pasted is shown, escaped
    assert tracked() == {"known-1": "kept", "new-1": "fresh"}  # a known scan keeps its label


def test_the_form_is_empty_again_after_adding(operator_client):
    form = parse_html(add(operator_client, ids="once-1", label="x")).select_one("form.add-form")

    assert form.select_one('textarea[name="ids"]').get_text().strip() == ""
    assert not form.select_one('input[name="label"]').has_attr("value")


def test_a_csv_with_a_header_gives_each_row_its_own_label(operator_client):
    content = b"tracking_id,label\ncsv-1,Finance Q3\ncsv-2,\ncsv-3,HR \xc3\xa9t\xc3\xa9\n"

    response = add(operator_client, csv_file=csv_file(content), label="default label")

    assert tracked() == {"csv-1": "Finance Q3", "csv-2": "default label", "csv-3": "HR été"}
    assert "3 added" in page_text(response)


def test_the_csv_columns_are_found_by_name_in_any_order(operator_client):
    content = b"Label,owner,Tracking_ID\nnightly,ann,col-1\n,bob,col-2\n"

    add(operator_client, csv_file=csv_file(content))

    assert tracked() == {"col-1": "nightly", "col-2": ""}


def test_a_csv_without_a_header_takes_the_ids_from_the_first_column(operator_client):
    content = b"plain-1,ignored\nplain-2\n\nplain-3,also ignored,more\n"

    add(operator_client, csv_file=csv_file(content), label="batch 7")

    assert tracked() == {"plain-1": "batch 7", "plain-2": "batch 7", "plain-3": "batch 7"}


def test_a_csv_saved_by_excel_with_a_bom_and_crlf_is_read(operator_client):
    content = "tracking_id,label\r\nexcel-1,From Excel\r\n".encode("utf-8-sig")

    add(operator_client, csv_file=csv_file(content))

    assert tracked() == {"excel-1": "From Excel"}


def test_pasted_ids_and_a_csv_are_added_together(operator_client):
    response = add(operator_client, ids="both-1", csv_file=csv_file(b"both-2\nboth-1\n"))

    assert set(tracked()) == {"both-1", "both-2"}
    assert "2 added, 1 already tracked, 0 rejected" in page_text(response)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("tracking_id\nlatin-1,caf\xe9\n".encode("latin-1"), "The CSV file is not UTF-8 text."),
        ("tracking_id\nutf16-1\n".encode("utf-16"), "The CSV file is not UTF-8 text."),
        (b"\n \n,,\n", "The CSV file has no rows."),
        (b"", "The submitted file is empty."),
        (b"tracking_id,label\nnul-1,a\x00b\n", "The CSV file contains a NUL character"),
    ],
    ids=["latin-1", "utf-16", "blank-rows", "zero-bytes", "nul"],
)
def test_a_csv_that_cannot_be_read_gives_a_clear_error_and_adds_nothing(operator_client, content, message):
    response = add(operator_client, ids="also-pasted-1", csv_file=csv_file(content))

    assert message in page_text(response)
    assert "added," not in page_text(response)
    assert tracked() == {}


@pytest.mark.parametrize("ids", ["", "   \n , ;  "])
def test_an_empty_submission_asks_for_ids(operator_client, ids):
    response = add(operator_client, ids=ids, label="lonely label")

    assert "Paste at least one tracking ID or choose a CSV file." in page_text(response)
    assert tracked() == {}


def test_too_many_ids_at_once_are_refused(operator_client):
    response = add(operator_client, ids="\n".join(f"bulk-{n}" for n in range(5001)))

    assert "At most 5000 IDs at once; this has 5001." in page_text(response)
    assert tracked() == {}


def test_a_label_over_200_characters_is_refused(operator_client):
    response = add(operator_client, ids="labelled-1", label="l" * 201)

    assert "Ensure this value has at most 200 characters (it has 201)." in page_text(response)
    assert tracked() == {}


def test_pasted_text_with_a_nul_character_is_refused(operator_client):
    response = add(operator_client, ids="nul-\x00-1")

    assert "Null characters are not allowed." in page_text(response)
    assert tracked() == {}


def test_new_scans_are_refreshed_at_once(
    operator_client, simulator, protecto_settings, eager_celery, django_capture_on_commit_callbacks
):
    simulator.add_scan("sim-failed", status="FAILED", error_msg="Schema changed during scan")
    simulator.add_scan("sim-running", status="IN-PROGRESS")
    simulator.add_scan("sim-done", status="SUCCESS")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        add(operator_client, ids="sim-failed sim-running", csv_file=csv_file(b"sim-done\n"))

    assert len(callbacks) == 2  # the refresh, and the alert send that the refresh task asks for
    assert sorted(id for batch in simulator.status_requests for id in batch) == [
        "sim-done",
        "sim-failed",
        "sim-running",
    ]
    scans = {scan.tracking_id: scan for scan in Scan.objects.all()}
    assert scans["sim-failed"].status == Scan.Status.FAILED
    assert scans["sim-failed"].error_message == "Schema changed during scan"
    assert scans["sim-running"].status == Scan.Status.IN_PROGRESS
    assert scans["sim-running"].started_at is not None
    assert scans["sim-done"].status == Scan.Status.SUCCESS


def test_nothing_is_refreshed_when_nothing_was_added(operator_client, django_capture_on_commit_callbacks):
    make_scan("already-1")

    with django_capture_on_commit_callbacks() as callbacks:
        add(operator_client, ids="already-1 bad!id")

    assert callbacks == []
