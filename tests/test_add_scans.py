"""Adding scans: pasted IDs and CSV files read forgivingly (links, quotes, semicolon CSVs, loose column names)
but never split on spaces; an answer for every entry; a preview before anything large or doubtful is added; and
a refresh at once (a real eager refresh against the simulator) so new scans show a status right away."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from scans.id_input import PREVIEW_ABOVE
from scans.models import Scan
from tests.factories import make_scan
from tests.helpers import page_text, parse_html

pytestmark = pytest.mark.django_db

UUID_ID = "47882682-9f38-4f45-afec-daadaa1b230b"
LONG_2025_ID = "354d2d30-178a-4220-9ce5-97908aa5713015052025072328"
SPACES = "contains spaces; put one ID per line, or separate IDs with commas"


def results(response) -> list[tuple[str, str, str]]:
    """(tracking ID as shown, result, reason or note) for each row of the results table."""
    rows = []
    for row in parse_html(response).select('section[aria-label="Results"] tbody tr'):
        shown, outcome = row.find_all("td")
        badge = outcome.select_one("span.badge")
        note = "".join(outcome.find_all(string=True, recursive=False))
        rows.append((shown.get_text(), badge.get_text(), note.strip()))
    return rows


def preview(response) -> dict[str, list]:
    """Each category the preview lists, by its heading's id: rows as tuples of cell texts, list items as text."""
    section = parse_html(response).select_one('section[aria-label="Preview"]')
    assert section is not None, "no preview on the page"
    found = {}
    for heading in section.select("h3[id]"):
        listing = section.select_one(f'[aria-labelledby="{heading["id"]}"]')
        if listing.name == "table":
            found[heading["id"]] = [
                tuple(td.get_text() for td in tr.find_all("td")) for tr in listing.select("tbody tr")
            ]
        else:
            found[heading["id"]] = [item.get_text() for item in listing.find_all("li")]
    return found


def _preview_form(response):
    return parse_html(response).select_one('section[aria-label="Preview"] form')


def _posted_back(form) -> dict[str, str]:
    data = {field["name"]: field.get("value", "") for field in form.select("input[name]")}
    # A browser drops the one newline that follows <textarea> (the template writes it so that text starting with
    # a newline survives); html.parser keeps it, so drop it here as the browser would.
    data |= {field["name"]: field.get_text().removeprefix("\n") for field in form.select("textarea[name]")}
    return data


def confirm(client, response):
    """Press the preview's "Add N scans" button."""
    form = _preview_form(response)
    answer = client.post(form["action"], _posted_back(form))
    assert answer.status_code == 200
    return answer


def edit(client, response):
    """Press the preview's "Edit" button."""
    form = _preview_form(response)
    button = form.find("button", string="Edit")
    answer = client.post(button["formaction"], _posted_back(form))
    assert answer.status_code == 200
    return answer


def textarea(response) -> str:
    return parse_html(response).select_one('form.add-form textarea[name="ids"]').get_text().strip("\n")


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


def test_pasted_ids_may_be_separated_by_newlines_commas_semicolons_or_tabs(operator_client):
    response = add(operator_client, ids="id-1\nid-2, id-3;id-4\tid-5\r\n\tid-6,,\n\n", label="pasted")

    assert tracked() == {f"id-{n}": "pasted" for n in range(1, 7)}
    assert "6 added, 0 already tracked, 0 repeated, 0 rejected" in page_text(response)


def test_a_line_with_spaces_is_one_rejected_entry_never_several_ids(operator_client):
    response = add(operator_client, ids="bad id with spaces\nid-1")

    assert tracked() == {}  # a rejection means the preview first
    assert preview(response)["preview-rejected"] == [("bad id with spaces", SPACES)]
    assert preview(response)["preview-new"] == [("id-1", "")]


def test_surrounding_whitespace_and_quotes_are_trimmed(operator_client):
    add(operator_client, ids=" \"q-1\" , 'q-2'\t\u201cq-3\u201d ;`q-4`\n\u00a0q-5\u200b\n")

    assert set(tracked()) == {"q-1", "q-2", "q-3", "q-4", "q-5"}


@pytest.mark.parametrize(
    ("pasted", "expected"),
    [
        (f"https://protecto-trial.protecto.ai/app/data-scan/{UUID_ID}?tab=details", UUID_ID),
        (f"https://tenant.protecto.ai/api/vault/data-scan/status/{LONG_2025_ID}", LONG_2025_ID),
        ("https://tenant.protecto.ai/scans?tracking_id=id_3&page=2", "id_3"),
        (f"http://dashboard.local/#/scans/{UUID_ID.upper()}", UUID_ID.upper()),
        (f"https://dashboard.example/scans/{UUID_ID}/", UUID_ID),
        ("tracking_id: abc-1", "abc-1"),
        ("tracking_id=abc-2", "abc-2"),
        ('"tracking_id": "abc-3"', "abc-3"),
        ('{"trackingId":"abc-4"}', "abc-4"),
        ("2024-05-01 12:00:01 INFO scan started tracking_id=abc-5 source=snowflake", "abc-5"),
    ],
    ids=[
        "link-path",
        "link-2025-id",
        "link-query",
        "link-fragment",
        "own-dashboard",
        "colon",
        "equals",
        "json",
        "json-camel",
        "log-line",
    ],
)
def test_an_id_is_taken_out_of_a_pasted_link_or_a_tracking_id_text(operator_client, pasted, expected):
    response = add(operator_client, ids=pasted)

    assert set(tracked()) == {expected}
    assert "1 added" in page_text(response)


@pytest.mark.parametrize(
    ("pasted", "reason"),
    [
        ("https://protecto.ai/pricing", "is a link without a tracking ID in it"),
        (f"https://x.example/{UUID_ID}/compare/{LONG_2025_ID}", "is a link with several ID-like parts"),
        ("tracking_id: a1, tracking_id=b2 tracking_id=c3", "names more than one tracking ID"),
        ("see https://x.example/" + UUID_ID, "contains spaces"),
    ],
    ids=["no-id", "two-ids", "two-keys", "link-in-a-sentence"],
)
def test_a_link_or_text_without_exactly_one_id_is_rejected_with_the_reason(operator_client, pasted, reason):
    response = add(operator_client, ids=pasted)

    (rejected,) = preview(response)["preview-rejected"]
    assert reason in rejected[1]
    assert tracked() == {}


def test_an_id_repeated_in_the_paste_is_reported_as_repeated_and_added_once(operator_client):
    make_scan("known-1")

    response = add(operator_client, ids=f"new-1\nknown-1\nnew-1\n{UUID_ID}\nhttps://x.example/s/{UUID_ID}")

    assert "1 added" not in page_text(response) and "2 added, 1 already tracked, 2 repeated, 0 rejected" in (
        page_text(response)
    )
    assert results(response) == [
        ("new-1", "Added", "refreshing now"),
        (UUID_ID, "Added", "refreshing now"),
        ("known-1", "Already tracked", ""),
        ("new-1", "Repeated", "repeated in this paste; only the first was added"),
        (UUID_ID, "Repeated", "repeated in this paste; only the first was added"),
    ]
    assert Scan.objects.filter(tracking_id="new-1").count() == 1


def test_every_entry_gets_its_own_result_with_the_reason_for_a_rejection(operator_client):
    make_scan("known-1", label="kept")
    too_long = "x" * 129

    response = confirm(
        operator_client, add(operator_client, ids=f"new-1,known-1,new-1,bad<id>,{too_long}", label="fresh")
    )

    assert "1 added, 1 already tracked, 1 repeated, 2 rejected" in page_text(response)
    assert results(response) == [
        ("new-1", "Added", "refreshing now"),
        ("known-1", "Already tracked", ""),
        ("new-1", "Repeated", "repeated in this paste; only the first was added"),
        ("bad<id>", "Rejected", "contains '<', '>'; only letters, digits, '-' and '_' are allowed"),
        ("x" * 79 + "…", "Rejected", "is 129 characters long; the limit is 128"),
    ]
    assert "bad&lt;id&gt;" in response.content.decode()  # what was pasted is shown, escaped
    assert tracked() == {"known-1": "kept", "new-1": "fresh"}  # a known scan keeps its label


def test_the_form_is_empty_again_after_adding(operator_client):
    form = parse_html(add(operator_client, ids="once-1", label="x")).select_one("form.add-form")

    assert form.select_one('textarea[name="ids"]').get_text().strip() == ""
    assert not form.select_one('input[name="label"]').has_attr("value")


def test_rejected_entries_stay_in_the_box_after_adding_and_the_accepted_ones_do_not(operator_client):
    pasted = "ok-1\nbad id one\nok-2;bad!two\n"

    response = confirm(operator_client, add(operator_client, ids=pasted))

    assert set(tracked()) == {"ok-1", "ok-2"}
    assert textarea(response) == "bad id one\nbad!two"
    assert "The rejected entries are back in the box below" in page_text(response)


def test_a_preview_lists_what_will_be_added_already_tracked_repeated_and_rejected(operator_client):
    make_scan("known-1")

    response = add(operator_client, ids="new-1\nknown-1\nnew-1\nnot an id\nnew-2", label="batch")

    assert tracked() == {"known-1": ""}  # nothing added before the confirm
    assert preview(response) == {
        "preview-rejected": [("not an id", SPACES)],
        "preview-repeated": ["new-1"],
        "preview-tracked": ["known-1"],
        "preview-new": [("new-1", "batch"), ("new-2", "batch")],
    }
    button = _preview_form(response).find("button", type="submit")
    assert button.get_text() == "Add 2 scans"


def test_confirming_the_preview_adds_exactly_what_it_showed(operator_client):
    make_scan("known-1")
    shown = add(operator_client, ids="new-1\nknown-1\nnew-1\nnot an id\nnew-2", label="batch")

    response = confirm(operator_client, shown)

    assert tracked() == {"known-1": "", "new-1": "batch", "new-2": "batch"}
    assert "2 added, 1 already tracked, 1 repeated, 1 rejected" in page_text(response)


def test_edit_goes_back_to_the_form_with_the_text_and_label_as_typed(operator_client):
    pasted = "\nnew-1\nnot an id  \n\tnew-2\n"

    response = edit(operator_client, add(operator_client, ids=pasted, label="batch"))

    form = parse_html(response).select_one("form.add-form")
    # Exactly as typed, after the newline Django's Textarea writes (and a browser drops) after <textarea>.
    assert form.select_one('textarea[name="ids"]').get_text() == "\n" + pasted
    assert form.select_one('input[name="label"]')["value"] == "batch"
    assert tracked() == {}


def test_edit_after_a_csv_asks_for_the_file_again(operator_client):
    shown = add(operator_client, csv_file=csv_file(b"tracking_id\ncsv-1\nnot an id\n", name="scans.csv"))

    response = edit(operator_client, shown)

    assert "Choose scans.csv again" in page_text(response)
    assert tracked() == {}


def test_more_than_the_preview_limit_of_ids_is_shown_before_adding(operator_client):
    ids = [f"bulk-{n}" for n in range(PREVIEW_ABOVE + 1)]

    shown = add(operator_client, ids="\n".join(ids))

    assert tracked() == {}
    assert [tracking_id for tracking_id, _ in preview(shown)["preview-new"]] == ids
    confirm(operator_client, shown)
    assert sorted(tracked()) == sorted(ids)


def test_up_to_the_preview_limit_of_clean_ids_is_added_at_once(operator_client):
    response = add(operator_client, ids="\n".join(f"bulk-{n}" for n in range(PREVIEW_ABOVE)))

    assert len(tracked()) == PREVIEW_ABOVE
    assert parse_html(response).select_one('section[aria-label="Preview"]') is None


def test_a_preview_with_nothing_new_offers_only_edit(operator_client):
    make_scan("known-1")

    response = add(operator_client, ids="known-1\nnot an id")

    buttons = [button.get_text() for button in _preview_form(response).find_all("button")]
    assert buttons == ["Edit"]
    assert "Nothing new to add." in page_text(response)


@pytest.mark.parametrize(
    "parsed",
    [
        "not json",
        json.dumps({"entries": [["bad id", ""]], "repeated": [], "rejected": []}),
        json.dumps({"entries": [["ok-1", "l" * 201]], "repeated": [], "rejected": []}),
        json.dumps({"entries": [["ok-1", ""]], "repeated": [], "rejected": [["a", 3]]}),
        json.dumps({"entries": [["ok-1"]], "repeated": [], "rejected": []}),
        json.dumps({"entries": [[f"id-{n}", ""] for n in range(5001)], "repeated": [], "rejected": []}),
    ],
    ids=["not-json", "bad-id", "long-label", "bad-reason", "short-entry", "too-many"],
)
def test_a_tampered_confirm_adds_nothing_and_says_so(operator_client, parsed):
    response = operator_client.post("/add/confirm/", {"parsed": parsed, "label": ""}, follow=True)

    assert tracked() == {}
    assert response.redirect_chain[-1][0] == "/add/"
    assert "paste the IDs again" in page_text(response) or "At most 5000 IDs at once" in page_text(response)


def test_a_viewer_can_neither_confirm_nor_edit(viewer_client):
    data = {"parsed": json.dumps({"entries": [["ok-1", ""]], "repeated": [], "rejected": []}), "ids": "ok-1"}

    assert viewer_client.post("/add/confirm/", data).status_code == 403
    assert viewer_client.post("/add/edit/", data).status_code == 403
    assert tracked() == {}


@pytest.mark.parametrize("url", ["/add/confirm/", "/add/edit/"])
def test_confirm_and_edit_take_posts_only(operator_client, url):
    assert operator_client.get(url).status_code == 405


def test_a_csv_with_a_header_gives_each_row_its_own_label(operator_client):
    content = b"tracking_id,label\ncsv-1,Finance Q3\ncsv-2,\ncsv-3,HR \xc3\xa9t\xc3\xa9\n"

    response = add(operator_client, csv_file=csv_file(content), label="default label")

    assert tracked() == {"csv-1": "Finance Q3", "csv-2": "default label", "csv-3": "HR été"}
    assert "3 added" in page_text(response)


def test_a_semicolon_csv_from_european_excel_is_read_and_its_header_is_not_an_id(operator_client):
    content = "Tracking ID;Label\r\neu-1;Finanzen, Q3\r\neu-2;Personal\r\n".encode("utf-8-sig")

    response = add(operator_client, csv_file=csv_file(content))

    assert tracked() == {"eu-1": "Finanzen, Q3", "eu-2": "Personal"}
    assert "2 added, 0 already tracked, 0 repeated, 0 rejected" in page_text(response)


@pytest.mark.parametrize("id_header", ["Tracking ID", "tracking_id", "tracking-id", "TrackingId", "id", "Scan ID"])
@pytest.mark.parametrize("label_header", ["label", "Label", "name"])
@pytest.mark.parametrize("delimiter", [",", ";", "\t"], ids=["comma", "semicolon", "tab"])
def test_csv_column_names_are_matched_loosely(operator_client, id_header, label_header, delimiter):
    rows = [["owner", label_header, id_header], ["ann", "nightly", "col-1"], ["bob", "", "col-2"]]
    content = "\n".join(delimiter.join(row) for row in rows).encode()

    add(operator_client, csv_file=csv_file(content))

    assert tracked() == {"col-1": "nightly", "col-2": ""}


def test_a_header_the_parser_does_not_know_is_skipped_not_reported(operator_client):
    response = add(operator_client, csv_file=csv_file(b"Scan reference,Owner\nref-1,ann\nref-2,bob\n"))

    assert set(tracked()) == {"ref-1", "ref-2"}
    assert "0 rejected" in page_text(response)


def test_a_csv_without_a_header_takes_the_ids_from_the_first_column(operator_client):
    content = b"plain-1,ignored\nplain-2\n\nplain-3,also ignored,more\n"

    add(operator_client, csv_file=csv_file(content), label="batch 7")

    assert tracked() == {"plain-1": "batch 7", "plain-2": "batch 7", "plain-3": "batch 7"}


def test_a_csv_row_without_an_id_is_rejected_with_its_row_number(operator_client):
    response = add(operator_client, csv_file=csv_file(b"tracking_id;label\nrow-1;a\n;orphan label\n"))

    assert preview(response)["preview-rejected"] == [("(empty)", "row 3 has no tracking ID")]


def test_a_csv_saved_by_excel_with_a_bom_and_crlf_is_read(operator_client):
    content = "tracking_id,label\r\nexcel-1,From Excel\r\n".encode("utf-8-sig")

    add(operator_client, csv_file=csv_file(content))

    assert tracked() == {"excel-1": "From Excel"}


def test_a_spreadsheet_selection_pasted_with_its_header_is_read_as_a_table(operator_client):
    response = add(operator_client, ids="Tracking ID\tLabel\nsheet-1\tFinance\nsheet-2\t\n", label="rest")

    assert tracked() == {"sheet-1": "Finance", "sheet-2": "rest"}
    assert "0 rejected" in page_text(response)


def test_a_pasted_column_heading_is_rejected_rather_than_tracked(operator_client):
    response = add(operator_client, ids="heading-1\nlabel\nTracking_ID\n")

    heading = "is a column heading, not a tracking ID"
    assert preview(response)["preview-rejected"] == [("label", heading), ("Tracking_ID", heading)]
    assert tracked() == {}


def test_pasted_ids_and_a_csv_are_added_together_and_repeats_across_them_are_reported(operator_client):
    response = add(operator_client, ids="both-1", csv_file=csv_file(b"both-2\nboth-1\n"))

    assert set(tracked()) == {"both-1", "both-2"}
    assert "2 added, 0 already tracked, 1 repeated, 0 rejected" in page_text(response)


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


@pytest.mark.parametrize("ids", ["", "   \n , ;  \t", "\"\" , ''"])
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
        add(operator_client, ids="sim-failed\nsim-running", csv_file=csv_file(b"sim-done\n"))

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


def test_scans_added_from_the_preview_are_refreshed_at_once(
    operator_client, simulator, protecto_settings, eager_celery, django_capture_on_commit_callbacks
):
    simulator.add_scan("sim-done", status="SUCCESS")
    shown = add(operator_client, ids="sim-done\nnot an id")

    with django_capture_on_commit_callbacks(execute=True):
        confirm(operator_client, shown)

    assert [id for batch in simulator.status_requests for id in batch] == ["sim-done"]
    assert Scan.objects.get(tracking_id="sim-done").status == Scan.Status.SUCCESS


def test_nothing_is_refreshed_when_nothing_was_added(operator_client, django_capture_on_commit_callbacks):
    make_scan("already-1")

    with django_capture_on_commit_callbacks() as callbacks:
        add(operator_client, ids="already-1\nalready-1")

    assert callbacks == []
