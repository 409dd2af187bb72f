"""A scan's own page: every field, the timeline, the error and raw answer shown safely, live polling that stops
when the scan is final, and the operator's actions (refresh now through a real eager refresh, label, archive)."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from scans.models import Scan, StatusChange
from scans.refresh import scans_refresh_due
from tests.factories import make_scan
from tests.helpers import HTMX, has_scan_poller, listed_ids, page_text, parse_html, scan_poll_url

pytestmark = pytest.mark.django_db

SCAN_ID = "354d2d30-178a-4220-9ce5-97908aa5713015052025072328"
T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)


def at(**delta) -> datetime:
    return T0 + timedelta(**delta)


def scan_page(client, tracking_id: str = SCAN_ID, **headers):
    response = client.get(f"/scans/{tracking_id}/", **headers)
    assert response.status_code == 200
    return response


@pytest.fixture
def failed_scan() -> Scan:
    return make_scan(
        SCAN_ID,
        status=Scan.Status.FAILED,
        raw_status="FAILED ",
        label="nightly CRM",
        data_source="salesforce",
        object_path="CustomerDB/Customerstable",
        submitted_at=at(),
        started_at=at(minutes=2, seconds=30),
        ended_at=at(minutes=10, seconds=35),
        error_message="Permission denied reading CustomerDB/Customerstable\nCaused by: SCANNER lacks SELECT",
        created_at=at(seconds=5),
        last_checked_at=at(minutes=11),
        last_changed_at=at(minutes=10, seconds=40),
        next_check_at=None,
        last_check_error="Protecto answered HTTP 503",
        check_failures=3,
        last_raw_answer={"tracking_id": SCAN_ID, "status": "FAILED ", "error_msg": "Permission denied"},
    )


def test_the_page_shows_every_field_of_the_scan(viewer_client, failed_scan):
    text = page_text(scan_page(viewer_client))

    for shown in (
        SCAN_ID,
        "Failed",
        "<code>FAILED </code>",  # the API's own status text, trailing space and all
        "<dd>nightly CRM</dd>",
        "<dd>salesforce</dd>",
        "<code>CustomerDB/Customerstable</code>",
        "2026-03-02 09:00:00 UTC",  # submitted
        "2026-03-02 09:02:30 UTC",  # started
        "2026-03-02 09:10:35 UTC",  # ended
        "<dt>Queue wait</dt><dd>2m 30s</dd>",
        "<dt>Run time</dt><dd>8m 05s</dd>",
        "<dt>Total</dt><dd>10m 35s</dd>",
        "2026-03-02 09:00:05 UTC",  # tracked since
        "2026-03-02 09:11:00",  # last checked
        "2026-03-02 09:10:40",  # last change
        '<dt>Next check</dt><dd><span class="muted">none</span></dd>',
        "Protecto answered HTTP 503 (3 in a row)",
        "Final: no longer polled.",
    ):
        assert shown in text, shown


def test_the_page_shows_the_whole_error_not_just_its_first_line(viewer_client, failed_scan):
    error = parse_html(scan_page(viewer_client)).select_one(".error-box pre").get_text()

    assert error == "Permission denied reading CustomerDB/Customerstable\nCaused by: SCANNER lacks SELECT"


def test_the_raw_answer_is_shown_as_indented_json(viewer_client, failed_scan):
    raw = parse_html(scan_page(viewer_client)).select_one("pre.raw").get_text()

    assert raw.startswith('{\n  "error_msg": "Permission denied",\n  "status": "FAILED ",')


def test_the_raw_answer_is_html_escaped(viewer_client):
    make_scan(SCAN_ID, last_raw_answer={"error_msg": "</pre><script>alert('raw')</script>"})

    page = scan_page(viewer_client).content.decode()

    assert "<script>alert(" not in page
    assert "&lt;/pre&gt;&lt;script&gt;alert(&#x27;raw&#x27;)&lt;/script&gt;" in page


def test_a_scan_with_no_answer_yet_says_so(viewer_client):
    make_scan(SCAN_ID)

    text = page_text(scan_page(viewer_client))

    assert "not answered yet" in text
    assert "No status seen yet: the first refresh will fill this in." in text
    assert "None yet." in text


def test_the_timeline_lists_each_status_seen_with_the_time_spent_in_it(viewer_client, failed_scan):
    for from_status, to_status, seen in (
        ("UNKNOWN", "PENDING", at(seconds=5)),
        ("PENDING", "IN-PROGRESS", at(minutes=3)),
        ("IN-PROGRESS", "FAILED", at(minutes=10, seconds=40)),
    ):
        StatusChange.objects.create(
            scan=failed_scan, from_status=from_status, to_status=to_status, observed_at=seen
        )

    items = parse_html(scan_page(viewer_client)).select("ol.timeline > li")
    steps = [" ".join(item.get_text().split()) for item in items]

    assert len(steps) == 3
    assert "Pending" in steps[0] and "2026-03-02 09:00:05" in steps[0] and "for 2m 55s" in steps[0]
    assert "In progress" in steps[1] and "2026-03-02 09:03:00" in steps[1] and "for 7m 40s" in steps[1]
    assert "Failed" in steps[2] and "2026-03-02 09:10:40" in steps[2] and "final" in steps[2]
    assert ["step-current" in item["class"] for item in items] == [False, False, True]


def test_the_current_step_of_a_live_scan_counts_up_to_now(viewer_client, time_machine):
    time_machine.move_to(at(minutes=20), tick=False)
    scan = make_scan(SCAN_ID, status=Scan.Status.IN_PROGRESS, submitted_at=at(), started_at=at(minutes=1))
    StatusChange.objects.create(
        scan=scan, from_status="PENDING", to_status="IN-PROGRESS", observed_at=at(minutes=2)
    )

    current = parse_html(scan_page(viewer_client)).select_one("ol.timeline > li.step-current")

    assert current.select_one("span[data-since]").get_text() == "18m 00s"  # the page's script ticks it on
    assert "for 18m 00s so far" in " ".join(current.get_text().split())


def test_an_unknown_tracking_id_is_a_404(viewer_client):
    assert viewer_client.get("/scans/no-such-scan/").status_code == 404


@pytest.mark.parametrize("bad", ["%00", "a%00b", "two%20words", "x" * 129, "%F0%9F%98%80"])
def test_a_value_that_is_not_a_tracking_id_never_reaches_a_scan_view(operator_client, bad):
    assert operator_client.get(f"/scans/{bad}/").status_code == 404
    assert operator_client.post(f"/scans/{bad}/archive/").status_code == 404


def test_an_api_error_containing_html_is_escaped_on_the_list_and_the_scan_page(
    operator_client, simulator, protecto_settings
):
    attack = "<img src=x onerror=alert(1)>"
    simulator.add_scan(SCAN_ID, status="FAILED", error_msg=attack)
    make_scan(SCAN_ID, status=Scan.Status.PENDING)
    scans_refresh_due()  # the message arrives the real way: from the API, through the refresh

    assert Scan.objects.get().error_message == attack
    for page in (operator_client.get("/").content.decode(), scan_page(operator_client).content.decode()):
        assert "<img src=x" not in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page


# --- Live polling ------------------------------------------------------------------------------------------


def test_a_live_scan_polls_gets_204_while_unchanged_and_its_new_state_after_a_change(viewer_client):
    scan = make_scan(SCAN_ID, status=Scan.Status.PENDING)
    poll = scan_poll_url(scan_page(viewer_client))

    assert viewer_client.get(poll, **HTMX).status_code == 204

    Scan.objects.filter(pk=scan.pk).update(status=Scan.Status.IN_PROGRESS, updated_at=timezone.now())
    changed = viewer_client.get(poll, **HTMX)

    assert changed.status_code == 200
    partial = changed.content.decode()
    assert partial.lstrip().startswith('<section id="scan-live"') and "<html" not in partial
    assert "In progress" in partial
    assert viewer_client.get(scan_poll_url(changed), **HTMX).status_code == 204


@pytest.mark.parametrize(
    "fields",
    [
        {"status": Scan.Status.SUCCESS},
        {"status": Scan.Status.FAILED},
        {"status": Scan.Status.PENDING, "archived_at": T0},
    ],
    ids=["succeeded", "failed", "archived"],
)
def test_a_scan_that_cannot_change_tells_htmx_to_stop_polling(viewer_client, fields):
    scan = make_scan(SCAN_ID, **fields)

    response = viewer_client.get(f"/scans/{SCAN_ID}/?v={scan.updated_at.timestamp():.6f}", **HTMX)

    assert response.status_code == 286
    assert not has_scan_poller(scan_page(viewer_client))  # and the page does not start polling at all


def test_a_scan_that_became_final_since_the_last_poll_is_sent_once_more(viewer_client):
    scan = make_scan(SCAN_ID, status=Scan.Status.IN_PROGRESS)
    poll = scan_poll_url(scan_page(viewer_client))

    Scan.objects.filter(pk=scan.pk).update(status=Scan.Status.SUCCESS, updated_at=timezone.now())
    response = viewer_client.get(poll, **HTMX)

    assert response.status_code == 200
    assert "Succeeded" in response.content.decode()
    assert not has_scan_poller(response)


# --- Actions -----------------------------------------------------------------------------------------------


def test_refresh_now_makes_the_scan_due_and_the_queued_refresh_polls_the_api(
    operator_client, simulator, protecto_settings, eager_celery, django_capture_on_commit_callbacks
):
    simulator.add_scan(SCAN_ID, status="FAILED", error_msg="Quota exceeded for tenant: 500000 samples per day")
    later = timezone.now() + timedelta(hours=1)
    make_scan(SCAN_ID, status=Scan.Status.PENDING, next_check_at=later)
    before = timezone.now()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = operator_client.post(f"/scans/{SCAN_ID}/refresh/")
        due = Scan.objects.get().poll.next_check_at
        assert before <= due <= timezone.now()  # due now, not in an hour
        assert simulator.status_requests == []  # the request itself never waits for the API

    assert response.status_code == 302 and response["Location"] == f"/scans/{SCAN_ID}/"
    assert len(callbacks) == 2  # the refresh, and the alert send that the refresh task asks for
    assert [SCAN_ID] in simulator.status_requests
    scan = Scan.objects.get()
    assert scan.status == Scan.Status.FAILED
    assert scan.error_message == "Quota exceeded for tenant: 500000 samples per day"
    assert scan.poll.next_check_at is None  # final now: never polled again
    assert "Refresh requested." in page_text(operator_client.get(response["Location"]))


def test_refresh_now_on_a_final_scan_queues_nothing(
    operator_client, failed_scan, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = operator_client.post(f"/scans/{SCAN_ID}/refresh/", follow=True)

    assert callbacks == []
    assert Scan.objects.get().poll.next_check_at is None
    assert "This scan is final or archived: there is nothing to refresh." in page_text(response)


def test_an_operator_edits_the_label(operator_client, failed_scan):
    response = operator_client.post(f"/scans/{SCAN_ID}/label/", {"label": "  Q3 audit  "}, follow=True)

    assert Scan.objects.get().label == "Q3 audit"
    text = page_text(response)
    assert "Label saved." in text
    assert "<dd>Q3 audit</dd>" in text


def test_an_empty_label_clears_it(operator_client, failed_scan):
    operator_client.post(f"/scans/{SCAN_ID}/label/", {"label": ""})

    assert Scan.objects.get().label == ""


def test_a_label_over_200_characters_is_refused_with_a_message(operator_client, failed_scan):
    response = operator_client.post(f"/scans/{SCAN_ID}/label/", {"label": "x" * 201}, follow=True)

    assert response.status_code == 200
    assert Scan.objects.get().label == "nightly CRM"
    assert "A label is at most 200 characters." in page_text(response)


def test_a_label_of_exactly_200_characters_is_kept_whole(operator_client, failed_scan):
    operator_client.post(f"/scans/{SCAN_ID}/label/", {"label": "y" * 200})

    assert Scan.objects.get().label == "y" * 200


def test_archiving_takes_the_scan_off_the_list_and_out_of_every_refresh(
    operator_client, simulator, protecto_settings
):
    simulator.add_scan(SCAN_ID, status="IN-PROGRESS")
    make_scan(SCAN_ID, status=Scan.Status.PENDING)

    response = operator_client.post(f"/scans/{SCAN_ID}/archive/", follow=True)

    scan = Scan.objects.get()
    assert scan.archived_at is not None and scan.poll.next_check_at is None
    assert "Archived: this scan is no longer polled." in page_text(response)
    assert "Archived: not polled." in page_text(response)
    assert listed_ids(operator_client.get("/")) == []
    assert listed_ids(operator_client.get("/?archived=1")) == [SCAN_ID]

    scans_refresh_due(ignore_schedule=True)  # even a forced cycle leaves it alone

    assert simulator.status_requests == []
    assert Scan.objects.get().status == Scan.Status.PENDING


def test_restoring_brings_an_unfinished_scan_back_and_due_for_a_refresh(operator_client):
    make_scan(SCAN_ID, status=Scan.Status.PENDING, archived_at=T0, next_check_at=None)
    before = timezone.now()

    response = operator_client.post(f"/scans/{SCAN_ID}/restore/", follow=True)

    scan = Scan.objects.get()
    assert scan.archived_at is None
    assert before <= scan.poll.next_check_at <= timezone.now()
    assert "Restored: this scan is tracked again." in page_text(response)
    assert listed_ids(operator_client.get("/")) == [SCAN_ID]


def test_restoring_a_final_scan_does_not_poll_it_again(operator_client, failed_scan):
    Scan.objects.update(archived_at=T0)

    operator_client.post(f"/scans/{SCAN_ID}/restore/")

    scan = Scan.objects.get()
    assert scan.archived_at is None and scan.poll.next_check_at is None


def test_an_action_returns_to_the_page_it_came_from_but_never_to_another_site(operator_client, failed_scan):
    back = operator_client.post(f"/scans/{SCAN_ID}/label/", {"label": "a", "next": "/?status=FAILED"})
    away = operator_client.post(f"/scans/{SCAN_ID}/label/", {"label": "b", "next": "https://evil.example/"})

    assert back["Location"] == "/?status=FAILED"
    assert away["Location"] == f"/scans/{SCAN_ID}/"


def test_the_action_buttons_match_the_scan(operator_client):
    make_scan("live-one", status=Scan.Status.PENDING)
    make_scan("archived-one", status=Scan.Status.SUCCESS, archived_at=T0)

    live = scan_page(operator_client, "live-one").content.decode()
    archived = scan_page(operator_client, "archived-one").content.decode()

    assert 'action="/scans/live-one/refresh/"' in live and 'action="/scans/live-one/archive/"' in live
    assert "/restore/" not in live
    assert 'action="/scans/archived-one/restore/"' in archived
    assert "/refresh/" not in archived and "/archive/" not in archived
