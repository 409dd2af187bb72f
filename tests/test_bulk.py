"""Bulk actions done right: "Select all N matching" acts on the filters, set-based and capped; an empty label is
refused (Clear label is its own action); a bulk archive offers an Undo that restores exactly what it archived."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scans import selection
from scans.models import Scan
from scans.selection import BULK_MAX
from tests.factories import make_scan
from tests.helpers import get_list, page_text, parse_html

pytestmark = pytest.mark.django_db


def _failed_and_fine(now, failed: int = 60, fine: int = 15) -> None:
    """`failed` failed scans labelled "nightly" and `fine` succeeded ones, all tracked and submitted recently."""
    for n in range(failed):
        make_scan(
            f"fail-{n:03d}", status=Scan.Status.FAILED, label="nightly", submitted_at=now - timedelta(minutes=n)
        )
    for n in range(fine):
        make_scan(
            f"fine-{n:03d}", status=Scan.Status.SUCCESS, label="nightly", submitted_at=now - timedelta(minutes=n)
        )


def _archived_ids() -> set[str]:
    return set(Scan.objects.archived().values_list("tracking_id", flat=True))


def _matching(query: str, **data) -> dict:
    """The bulk form as dashboard.js posts it once "Select all N matching" was chosen."""
    return {"scope": "matching", "query": query, **data}


# --- Select all N matching ---------------------------------------------------------------------------------


def test_the_list_offers_all_matching_scans_when_they_span_pages(operator_client, now):
    _failed_and_fine(now)

    strip = parse_html(get_list(operator_client, "?status=FAILED&per=25")).select_one("[data-select-matching]")

    assert "All 25 scans on this page are selected." in strip.get_text(" ", strip=True)
    assert strip.select_one("[data-select-matching-all]").get_text(strip=True) == (
        "Select all 60 scans matching these filters"
    )
    assert "at most 10,000 per action" in strip.select_one("[data-matching-chosen]").get_text(" ", strip=True)
    # Posted only once chosen: the two inputs start disabled and name the bulk form.
    inputs = {field["name"]: field for field in strip.select("input[data-matching-input]")}
    assert inputs["scope"]["value"] == "matching" and "disabled" in inputs["scope"].attrs
    assert inputs["query"]["value"] == "status=FAILED&per=25" and inputs["query"]["form"] == "bulk-form"


def test_no_offer_when_every_matching_scan_is_on_the_page(operator_client, now):
    _failed_and_fine(now, failed=3, fine=0)

    assert parse_html(get_list(operator_client)).select_one("[data-select-matching]") is None


def test_a_viewer_is_offered_nothing(viewer_client, now):
    _failed_and_fine(now)

    assert parse_html(get_list(viewer_client, "?per=25")).select_one("[data-select-matching]") is None


def test_archive_all_matching_acts_on_every_page_of_the_filter_and_nothing_else(operator_client, now):
    _failed_and_fine(now)

    response = operator_client.post(
        "/bulk/archive/", _matching("status=FAILED&per=25&page=2&sort=ended", ids=["fail-000"]), follow=True
    )

    assert _archived_ids() == {f"fail-{n:03d}" for n in range(60)}
    assert "Archived 60 scan(s): they are no longer polled." in page_text(response)
    assert not Scan.objects.archived().filter(poll__next_check_at__isnull=False).exists()


def test_all_matching_follows_the_search_and_the_stuck_rule(operator_client, now):
    make_scan("stuck-a", status=Scan.Status.PENDING, label="ops", submitted_at=now - timedelta(hours=2))
    make_scan("stuck-b", status=Scan.Status.PENDING, label="other", submitted_at=now - timedelta(hours=2))
    make_scan("fresh-a", status=Scan.Status.PENDING, label="ops", submitted_at=now - timedelta(minutes=5))

    operator_client.post("/bulk/label/", _matching("status=STUCK&q=ops", label="escalated"))

    assert dict(Scan.objects.values_list("tracking_id", "label")) == {
        "stuck-a": "escalated",
        "stuck-b": "other",
        "fresh-a": "ops",
    }


def test_refresh_all_matching_makes_only_the_active_scans_due(
    operator_client, now, django_capture_on_commit_callbacks
):
    make_scan("run-a", status=Scan.Status.IN_PROGRESS, label="x", next_check_at=now + timedelta(hours=1))
    make_scan("done-a", status=Scan.Status.SUCCESS, label="x", next_check_at=None)

    with django_capture_on_commit_callbacks():
        response = operator_client.post("/bulk/refresh/", _matching("q=x"), follow=True)

    polls = dict(Scan.objects.values_list("tracking_id", "poll__next_check_at"))
    assert polls == {"run-a": now, "done-a": None}
    assert "Refresh requested for 1 scan(s)." in page_text(response)


def test_restore_all_matching_in_the_archive(operator_client, now):
    make_scan("old-a", status=Scan.Status.SUCCESS, label="q3", archived_at=now)
    make_scan("old-b", status=Scan.Status.SUCCESS, label="q4", archived_at=now)

    operator_client.post("/bulk/restore/", _matching("archived=1&q=q3"))

    assert _archived_ids() == {"old-b"}


def test_all_matching_is_written_with_one_update_however_many_match(operator_client, now):
    _failed_and_fine(now, failed=150, fine=0)

    with CaptureQueriesContext(connection) as queries:
        operator_client.post("/bulk/label/", _matching("status=FAILED", label="triaged"))

    updates = [query["sql"] for query in queries if query["sql"].startswith('UPDATE "scans_scan"')]
    assert len(updates) == 1 and "SELECT" in updates[0]  # the selection is a subquery, never a list of IDs
    assert set(Scan.objects.values_list("label", flat=True)) == {"triaged"}


def test_the_count_is_the_databases_at_the_time_of_the_action(operator_client, now):
    _failed_and_fine(now, failed=30, fine=0)
    shown = parse_html(get_list(operator_client, "?status=FAILED&per=25")).select_one("[data-select-matching-all]")
    make_scan("fail-late", status=Scan.Status.FAILED, submitted_at=now)  # failed after the page was shown

    # A count posted by the client is no field of the form: it is never read.
    response = operator_client.post("/bulk/archive/", _matching("status=FAILED", count="5"), follow=True)

    assert "Select all 30" in shown.get_text()
    assert len(_archived_ids()) == 31
    assert "Archived 31 scan(s)" in page_text(response)


def test_more_than_the_cap_is_refused_and_says_so_on_the_page(operator_client, now, monkeypatch):
    monkeypatch.setattr(selection, "BULK_MAX", 40)  # the real cap is tested below, once, at full size
    _failed_and_fine(now)

    response = operator_client.post("/bulk/archive/", _matching("status=FAILED"), follow=True)

    assert "These filters match 60 scans; a bulk action takes at most 40." in page_text(response)
    assert _archived_ids() == set()


def test_the_real_cap_takes_ten_thousand_scans_and_refuses_one_more(operator_client):
    Scan.objects.bulk_create(
        [Scan(tracking_id=f"many-{n:05d}", status=Scan.Status.FAILED) for n in range(BULK_MAX + 1)],
        batch_size=2000,
    )

    page = parse_html(get_list(operator_client, "?status=FAILED"))
    refused = operator_client.post("/bulk/archive/", _matching("status=FAILED"), follow=True)
    Scan.objects.filter(tracking_id="many-00000").update(status=Scan.Status.SUCCESS)
    done = operator_client.post("/bulk/archive/", _matching("status=FAILED"), follow=True)
    archived = Scan.objects.archived().count()
    undo = {f["name"]: f["value"] for f in parse_html(done).select("[data-archive-undo] input[type=hidden]")}
    undone = operator_client.post("/bulk/archive/undo/", undo, follow=True)

    offer = page.select_one("[data-matching-offer]").get_text(" ", strip=True)
    assert "These filters match 10,001 scans; a bulk action takes at most 10,000" in offer
    assert page.select_one("[data-select-matching-all]") is None
    assert "These filters match 10,001 scans; a bulk action takes at most 10,000." in page_text(refused)
    assert "Archived 10,000 scan(s): they are no longer polled." in page_text(done)
    assert archived == BULK_MAX
    assert "Undone: 10000 scan(s) are tracked again." in page_text(undone)
    assert not Scan.objects.archived().exists()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=BOGUS", "Nothing was changed: the filters have a problem (Unknown status 'BOGUS' ignored.)"),
        ("q=" + "x" * 201, "Nothing was changed: the filters have a problem (Search is longer than 200"),
        ("status=FAILED&q=no-such-scan", "No scan matches these filters any more: nothing was changed."),
    ],
)
def test_filters_that_would_act_on_something_else_are_refused(operator_client, now, query, message):
    _failed_and_fine(now, failed=3, fine=3)

    response = operator_client.post("/bulk/archive/", _matching(query), follow=True)

    assert message in page_text(response)
    assert _archived_ids() == set()


def test_without_the_matching_scope_only_the_ticked_rows_count(operator_client, now):
    _failed_and_fine(now, failed=3, fine=0)

    operator_client.post("/bulk/archive/", {"ids": ["fail-001"], "query": "status=FAILED"})

    assert _archived_ids() == {"fail-001"}


# --- Labels: set needs a label, clear is its own action -----------------------------------------------------


@pytest.mark.parametrize("label", ["", "   "])
def test_set_label_with_an_empty_label_is_refused(operator_client, now, label):
    make_scan("lab-a", label="keep")

    response = operator_client.post("/bulk/label/", {"ids": ["lab-a"], "label": label}, follow=True)

    assert "Type a label, or use Clear label." in page_text(response)
    assert Scan.objects.get().label == "keep"


def test_clear_label_clears_the_selected_labels_only(operator_client, now):
    make_scan("lab-a", label="old")
    make_scan("lab-b", label="old")

    response = operator_client.post("/bulk/clear-label/", {"ids": ["lab-a"], "label": "ignored"}, follow=True)

    assert dict(Scan.objects.values_list("tracking_id", "label")) == {"lab-a": "", "lab-b": "old"}
    assert "Label cleared on 1 scan(s)." in page_text(response)


def test_clear_label_on_all_matching(operator_client, now):
    _failed_and_fine(now, failed=5, fine=2)

    operator_client.post("/bulk/clear-label/", _matching("status=FAILED"))

    assert set(Scan.objects.filter(status=Scan.Status.FAILED).values_list("label", flat=True)) == {""}
    assert set(Scan.objects.filter(status=Scan.Status.SUCCESS).values_list("label", flat=True)) == {"nightly"}


def test_the_bulk_bar_has_set_and_clear_label_buttons(operator_client, now):
    make_scan("lab-a")

    bar = parse_html(get_list(operator_client)).select_one("form#bulk-form")
    actions = {
        button.get_text(strip=True): button.get("formaction") for button in bar.select("button[formaction]")
    }

    assert actions["Set label"] == "/bulk/label/" and actions["Clear label"] == "/bulk/clear-label/"
    # Set label stays first: Enter in the label box submits with it, and an empty box is then refused.
    assert bar.select("button[formaction]")[0].get_text(strip=True) == "Set label"


# --- Archive, then Undo ------------------------------------------------------------------------------------


def test_a_bulk_archive_offers_undo_once_on_the_list_it_returns_to(operator_client, now):
    _failed_and_fine(now, failed=3, fine=0)

    response = operator_client.post(
        "/bulk/archive/", {"ids": ["fail-000", "fail-001"], "next": "/?q=fail"}, follow=True
    )
    undo = parse_html(response).select_one("[data-archive-undo]")
    again = parse_html(get_list(operator_client, "?q=fail"))

    assert response.redirect_chain[0][0] == "/?q=fail"
    assert undo.form["action"] == "/bulk/archive/undo/"
    assert undo.get_text(" ", strip=True) == "Archived 2 scan(s): they are no longer polled. Undo"
    assert undo.select_one('input[name="next"]')["value"] == "/?q=fail"
    assert again.select_one("[data-archive-undo]") is None  # shown once


def test_undo_restores_exactly_the_scans_that_archive_archived(operator_client, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    make_scan(
        "earlier", status=Scan.Status.PENDING, archived_at=timezone.now() - timedelta(days=1), next_check_at=None
    )
    make_scan("run-a", status=Scan.Status.PENDING, next_check_at=timezone.now() + timedelta(hours=1))
    make_scan("done-b", status=Scan.Status.SUCCESS, next_check_at=None)
    make_scan("later", status=Scan.Status.PENDING)
    operator_client.post("/bulk/archive/", {"ids": ["run-a", "done-b", "earlier"]})
    undo = parse_html(get_list(operator_client)).select_one("[data-archive-undo]")
    fields = {field["name"]: field["value"] for field in undo.select("input[type=hidden]")}
    time_machine.shift(timedelta(seconds=5))
    # Someone else archives another scan meanwhile: Undo is not theirs to take back.
    operator_client.post("/bulk/archive/", {"ids": ["later"]})
    time_machine.shift(timedelta(seconds=5))

    response = operator_client.post("/bulk/archive/undo/", fields, follow=True)

    assert _archived_ids() == {"earlier", "later"}
    assert "Undone: 2 scan(s) are tracked again." in page_text(response)
    polls = dict(Scan.objects.values_list("tracking_id", "poll__next_check_at"))
    assert polls["run-a"] == timezone.now() and polls["done-b"] is None  # polled again only if it can change


def test_undo_leaves_a_scan_archived_again_since(operator_client, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    make_scan("flip", status=Scan.Status.PENDING)
    operator_client.post("/bulk/archive/", {"ids": ["flip"]})
    fields = {
        f["name"]: f["value"] for f in parse_html(get_list(operator_client)).select("[data-archive-undo] input")
    }
    time_machine.shift(timedelta(seconds=5))
    operator_client.post("/bulk/restore/", {"ids": ["flip"]})
    operator_client.post("/bulk/archive/", {"ids": ["flip"]})

    response = operator_client.post("/bulk/archive/undo/", fields, follow=True)

    assert _archived_ids() == {"flip"}
    assert "Nothing to undo: those scans are no longer archived by that action." in page_text(response)


def test_undo_of_an_archive_of_all_matching(operator_client, now):
    _failed_and_fine(now)
    operator_client.post("/bulk/archive/", _matching("status=FAILED"))
    fields = {
        f["name"]: f["value"] for f in parse_html(get_list(operator_client)).select("[data-archive-undo] input")
    }

    operator_client.post("/bulk/archive/undo/", fields)

    assert _archived_ids() == set()


@pytest.mark.parametrize("archived_at", ["", "yesterday"])
def test_a_bad_undo_changes_nothing(operator_client, now, archived_at):
    make_scan("kept", archived_at=now)

    response = operator_client.post("/bulk/archive/undo/", {"archived_at": archived_at}, follow=True)

    assert response.status_code == 200
    assert _archived_ids() == {"kept"}


def test_a_viewer_cannot_undo_or_clear_labels(viewer_client, now):
    make_scan("kept", archived_at=now, label="x")

    assert viewer_client.post("/bulk/archive/undo/", {"archived_at": now.isoformat()}).status_code == 403
    assert viewer_client.post("/bulk/clear-label/", {"ids": ["kept"]}).status_code == 403
    assert Scan.objects.filter(label="x", archived_at=now).exists()
