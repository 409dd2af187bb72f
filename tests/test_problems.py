"""The Problems view: failed and stuck scans grouped by normalised error, acknowledged one by one or by group,
coming back when they fail again; the navigation's red count; the list's filter for one group; roles."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from scans.models import Acknowledgement, Scan
from scans.problems import error_signature, problems_open_count
from scans.triage import problems_acknowledge
from tests.factories import make_refreshed_scan, make_scan
from tests.helpers import listed_ids, page_text, parse_html

pytestmark = pytest.mark.django_db

PROBLEMS = "/problems/"
GROUP_ACK = "/problems/acknowledge/"
DENIED = "Permission denied reading object <path>"


def failed(tracking_id: str, error: str, *, label: str = "", ended_ago: timedelta = timedelta(minutes=5)) -> Scan:
    """A scan that failed `ended_ago` (by the API's end time), seen failing by a refresh at that moment."""
    ended = timezone.now() - ended_ago
    return make_scan(
        tracking_id,
        status=Scan.Status.FAILED,
        error_message=error,
        label=label,
        submitted_at=ended - timedelta(minutes=10),
        started_at=ended - timedelta(minutes=8),
        ended_at=ended,
        last_changed_at=ended,
        next_check_at=None,
    )


def stuck_pending(tracking_id: str, *, label: str = "") -> Scan:
    now = timezone.now()
    return make_scan(tracking_id, status=Scan.Status.PENDING, label=label, submitted_at=now - timedelta(hours=5))


def groups(response) -> dict[str, dict]:
    """Each group card of the page: its key -> title, count, labels text and the list link."""
    found = {}
    for card in parse_html(response).select("li.problem-group"):
        found[card["data-group"]] = {
            "title": card.select_one(".problem-title").get_text(" ", strip=True),
            "count": int(card.select_one(".problem-count strong").get_text()),
            "labels": card.select("dd")[2].get_text(" ", strip=True),
            "link": card.select_one(".problem-actions a")["href"],
            "buttons": [button.get_text(strip=True) for button in card.select("button")],
        }
    return found


@pytest.mark.parametrize(
    ("message", "signature"),
    [
        ("Permission denied reading object HR/2026/payroll.csv", DENIED),
        (
            "Connection to data source 'snowflake' timed out after 300s",
            "Connection to data source <str> timed out after <n>s",
        ),
        (
            "Scan 354d2d30-178a-4220-9ce5-97908aa5713015052025072328 lost its worker",
            "Scan <id> lost its worker",
        ),
        ("request 7f3a9c0b failed: HTTP 503\nRetry-After: 120", "request <hex> failed: HTTP <n>"),
        ('Column "email" missing in s3://bucket/exports/x.parquet', "Column <str> missing in <path>"),
        ("   ", "(no error message)"),
    ],
)
def test_errors_are_grouped_by_their_first_line_with_ids_numbers_strings_and_paths_masked(message, signature):
    assert error_signature(message) == signature


def test_failures_differing_only_in_their_path_form_one_group_with_counts_times_and_labels(operator_client):
    first = failed(
        "f-1", "Permission denied reading object HR/2026/a.csv", label="Payroll EU", ended_ago=timedelta(hours=3)
    )
    failed("f-2", "Permission denied reading object CRM/b.csv", label="Payroll EU", ended_ago=timedelta(hours=2))
    last = failed(
        "f-3", "Permission denied reading object HR/c.csv", label="Legal hold", ended_ago=timedelta(minutes=1)
    )
    failed("f-4", "Quota exceeded: 500000 samples per day", label="Legal hold")

    response = operator_client.get(PROBLEMS)

    found = groups(response)
    assert set(found) == {DENIED, "Quota exceeded: <n> samples per day"}
    assert found[DENIED]["count"] == 3
    assert found[DENIED]["labels"] == "Payroll EU , Legal hold"  # most affected first
    report = response.context["report"]
    group = next(group for group in report.groups if group.key == DENIED)
    assert (group.first_seen, group.last_seen) == (first.ended_at, last.ended_at)
    assert report.total == 4


def test_a_group_names_five_labels_and_how_many_more(operator_client):
    for n in range(7):
        failed(f"f-{n}", f"Permission denied reading object x/{n}", label=f"label {n}")

    assert groups(operator_client.get(PROBLEMS))[DENIED]["labels"].endswith("and 2 more")


def test_the_window_presets_choose_since_when_failures_count_and_24_h_is_the_default(operator_client):
    failed("recent", "Quota exceeded", ended_ago=timedelta(minutes=30))
    failed("this-morning", "Quota exceeded", ended_ago=timedelta(hours=5))
    failed("last-week", "Quota exceeded", ended_ago=timedelta(days=3))
    failed("long-ago", "Quota exceeded", ended_ago=timedelta(days=9))

    counts = {
        window: operator_client.get(PROBLEMS, {"window": window}).context["report"].total
        for window in ("1h", "24h", "7d")
    }

    assert counts == {"1h": 1, "24h": 2, "7d": 3}
    assert operator_client.get(PROBLEMS).context["report"].total == 2
    response = operator_client.get(PROBLEMS, {"window": "1y"})
    assert response.context["report"].total == 2
    assert "Unknown period; showing the last 24 h." in page_text(response)


def test_stuck_scans_form_their_own_groups_by_the_model_stuck_rule(operator_client, settings):
    settings.STUCK_PENDING_MINUTES, settings.STUCK_RUNNING_MINUTES = 30, 120
    stuck_pending("waiting", label="Orders")
    make_scan("running", status=Scan.Status.IN_PROGRESS, submitted_at=timezone.now() - timedelta(hours=4),
              started_at=timezone.now() - timedelta(hours=3))  # fmt: skip
    make_refreshed_scan("fine", Scan.Status.PENDING)  # submitted ten minutes ago: not stuck

    found = groups(operator_client.get(PROBLEMS))

    assert {key: group["count"] for key, group in found.items()} == {"stuck:pending": 1, "stuck:running": 1}
    assert "Stuck: pending too long" in found["stuck:pending"]["title"]
    assert found["stuck:pending"]["link"] == "/?status=STUCK"


def test_archived_scans_are_not_problems(operator_client):
    failed("gone", "Quota exceeded")
    Scan.objects.filter(tracking_id="gone").update(archived_at=timezone.now())

    assert operator_client.get(PROBLEMS).context["report"].groups == []


def test_a_group_link_filters_the_list_to_the_scans_with_that_error_in_the_window(operator_client, operator):
    acknowledged = failed("f-1", "Permission denied reading object HR/a.csv", ended_ago=timedelta(hours=2))
    problems_acknowledge(scan_ids=[acknowledged.pk], note="", user=operator, now=timezone.now())
    failed("f-2", "Permission denied reading object CRM/b.csv")
    failed("f-3", "Permission denied reading objects")  # same words, no path: another group
    failed("f-4", "Quota exceeded")
    failed("f-5", "Permission denied reading object HR/old.csv", ended_ago=timedelta(days=3))

    link = groups(operator_client.get(PROBLEMS))[DENIED]["link"]
    response = operator_client.get(link)

    # Acknowledged ones too: the list is the searchable record; the window is the Problems view's, by end time.
    assert sorted(listed_ids(response)) == ["f-1", "f-2"]
    week = operator_client.get(groups(operator_client.get(PROBLEMS, {"window": "7d"}))[DENIED]["link"])
    assert sorted(listed_ids(week)) == ["f-1", "f-2", "f-5"]


def test_an_acknowledged_scan_leaves_the_view_and_the_count_but_stays_in_the_list(operator_client, operator):
    scan = failed("f-1", "Quota exceeded")
    failed("f-2", "Quota exceeded")
    assert problems_open_count(now=timezone.now()) == 2

    response = operator_client.post(
        f"/scans/{scan.tracking_id}/acknowledge/", {"note": "ticket OPS-123"}, follow=True
    )

    assert "Acknowledged: this scan leaves the Problems view" in page_text(response)
    mark = parse_html(response).select_one("[data-ack]")
    assert mark.get_text(strip=True) == "Acknowledged by olivia: ticket OPS-123"
    assert groups(operator_client.get(PROBLEMS))["Quota exceeded"]["count"] == 1
    assert problems_open_count(now=timezone.now()) == 1
    assert "f-1" in listed_ids(operator_client.get("/", {"status": "FAILED"}))
    assert parse_html(operator_client.get("/")).select_one(".nav-count").get_text(strip=True).startswith("1")


def test_a_scan_that_changes_after_its_acknowledgement_is_a_problem_again(operator):
    scan = stuck_pending("waiting")
    now = timezone.now()
    problems_acknowledge(scan_ids=[scan.pk], note="known", user=operator, now=now)
    assert problems_open_count(now=now) == 0

    # A refresh then sees it fail: its last change is after the acknowledgement.
    Scan.objects.filter(pk=scan.pk).update(
        status=Scan.Status.FAILED, error_message="Quota exceeded", ended_at=now + timedelta(minutes=1),
        last_changed_at=now + timedelta(minutes=1),
    )  # fmt: skip

    assert problems_open_count(now=now + timedelta(minutes=2)) == 1


def test_acknowledging_a_group_takes_every_scan_of_it_and_nothing_else(operator_client):
    failed("f-1", "Permission denied reading object HR/a.csv")
    failed("f-2", "Permission denied reading object CRM/b.csv")
    failed("f-3", "Quota exceeded")
    failed("old", "Permission denied reading object HR/old.csv", ended_ago=timedelta(days=3))

    response = operator_client.post(GROUP_ACK, {"key": DENIED, "window": "24h", "note": "OPS-9"}, follow=True)

    assert "Acknowledged 2 scan(s)" in page_text(response)
    assert set(Acknowledgement.objects.values_list("scan__tracking_id", flat=True)) == {"f-1", "f-2"}
    assert set(groups(response)) == {"Quota exceeded"}
    assert response.context["window"] == "24h"


def test_acknowledging_a_scan_that_is_neither_failed_nor_stuck_changes_nothing(operator_client):
    make_refreshed_scan("fine", Scan.Status.SUCCESS)

    response = operator_client.post("/scans/fine/acknowledge/", {"note": "x"}, follow=True)

    assert "Only a failed or stuck scan can be acknowledged." in page_text(response)
    assert not Acknowledgement.objects.exists()


def test_acknowledging_again_replaces_the_note(operator_client):
    failed("f-1", "Quota exceeded")
    operator_client.post("/scans/f-1/acknowledge/", {"note": "first"})
    operator_client.post("/scans/f-1/acknowledge/", {"note": "OPS-2"})

    assert list(Acknowledgement.objects.values_list("note", flat=True)) == ["OPS-2"]


def test_a_viewer_sees_problems_without_acknowledge_buttons_and_is_refused_the_posts(viewer_client):
    failed("f-1", "Quota exceeded")

    response = viewer_client.get(PROBLEMS)

    assert groups(response)["Quota exceeded"]["buttons"] == []
    assert viewer_client.post(GROUP_ACK, {"key": "Quota exceeded", "window": "24h"}).status_code == 403
    assert viewer_client.post("/scans/f-1/acknowledge/", {"note": "x"}).status_code == 403
    assert not parse_html(viewer_client.get("/scans/f-1/")).select('form[action$="/acknowledge/"]')
    assert not Acknowledgement.objects.exists()


def test_an_operator_gets_an_acknowledge_button_per_group_and_on_a_failed_scan_page(operator_client):
    failed("f-1", "Quota exceeded")

    assert groups(operator_client.get(PROBLEMS))["Quota exceeded"]["buttons"] == ["Acknowledge 1"]
    assert parse_html(operator_client.get("/scans/f-1/")).select('form[action="/scans/f-1/acknowledge/"]')


def test_the_problems_view_needs_a_login(client):
    assert client.get(PROBLEMS).status_code == 302
    assert client.post(GROUP_ACK).status_code == 302


def test_the_problems_view_costs_a_fixed_number_of_queries(operator_client, django_assert_max_num_queries):
    for n in range(30):
        failed(f"f-{n}", f"Permission denied reading object x/{n}", label=f"label {n % 7}")
        stuck_pending(f"s-{n}", label=f"label {n % 3}")
    operator_client.get(PROBLEMS)  # session and the nav count's cache warmed

    # The user and its permissions (3), two reads per kind of problem (4), the nav count's cache key and the
    # maintenance banner (2): none grows with the number of scans, groups or labels.
    with django_assert_max_num_queries(9):
        operator_client.get(PROBLEMS)
