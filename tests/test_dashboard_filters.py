"""The scan list: status chips (stuck included), search, data source, dates, sorting, paging, archived, live
polling, and the bad query strings people paste, which must never cost a 500."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from scans import header_stats, selectors
from scans.models import Scan
from scans.services import scans_set_label
from tests.factories import make_refresh_run, make_scan
from tests.helpers import (
    HTMX,
    chip_counts,
    current_chip,
    get_list,
    header_poll_url,
    listed_ids,
    page_text,
    parse_html,
    table_poll_url,
)

pytestmark = pytest.mark.django_db

FULL_ID = "47882682-9f38-4f45-afec-daadaa1b230b"
OTHER_ID = "5c1e9d0a-1b2c-4d3e-8f40-123456789abc"


# --- Status chips ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["PENDING", "IN-PROGRESS", "SUCCESS", "FAILED", "UNKNOWN"])
def test_a_status_chip_lists_only_the_scans_in_that_status(operator_client, status):
    moment = timezone.now()
    for each in Scan.Status.values:
        make_scan(f"in-{each.lower()}", status=each, submitted_at=moment, started_at=moment)

    response = get_list(operator_client, f"?status={status}")

    assert listed_ids(response) == [f"in-{status.lower()}"]
    assert current_chip(response) == status.lower().replace("-", "_")


def test_the_status_filter_ignores_case(operator_client):
    make_scan("one-failed", status=Scan.Status.FAILED)
    make_scan("one-ok", status=Scan.Status.SUCCESS)

    assert listed_ids(get_list(operator_client, "?status=failed")) == ["one-failed"]


@pytest.mark.parametrize(
    ("waited", "stuck"),
    [
        (timedelta(minutes=29, seconds=59), False),
        (timedelta(minutes=30), False),
        (timedelta(minutes=30, seconds=1), True),
        (timedelta(days=3), True),
    ],
)
def test_a_pending_scan_is_stuck_once_it_waited_longer_than_the_pending_limit(operator_client, now, waited, stuck):
    make_scan("waiting", status=Scan.Status.PENDING, submitted_at=now - waited)

    response = get_list(operator_client, "?status=STUCK")

    assert listed_ids(response) == (["waiting"] if stuck else [])
    assert chip_counts(response)["stuck"] == int(stuck)


@pytest.mark.parametrize(
    ("running", "stuck"),
    [
        (timedelta(minutes=119, seconds=59), False),
        (timedelta(minutes=120), False),
        (timedelta(minutes=120, seconds=1), True),
    ],
)
def test_a_running_scan_is_stuck_once_it_ran_longer_than_the_running_limit(operator_client, now, running, stuck):
    # Submitted long ago on purpose: only the time since it started counts for a running scan.
    make_scan(
        "running", status=Scan.Status.IN_PROGRESS, submitted_at=now - timedelta(days=1), started_at=now - running
    )

    response = get_list(operator_client, "?status=STUCK")

    assert listed_ids(response) == (["running"] if stuck else [])


def test_finished_and_unknown_scans_are_never_stuck_however_old(operator_client, now):
    long_ago = now - timedelta(days=30)
    for status in (Scan.Status.SUCCESS, Scan.Status.FAILED, Scan.Status.UNKNOWN):
        make_scan(status=status, submitted_at=long_ago, started_at=long_ago)

    assert listed_ids(get_list(operator_client, "?status=STUCK")) == []


def test_the_stuck_limits_come_from_the_settings(operator_client, now, settings):
    settings.STUCK_PENDING_MINUTES = 5
    make_scan("six-minutes", status=Scan.Status.PENDING, submitted_at=now - timedelta(minutes=6))

    response = get_list(operator_client, "?status=STUCK")

    assert listed_ids(response) == ["six-minutes"]
    assert current_chip(response) == "stuck"


def test_a_stuck_scan_is_marked_stuck_in_every_listing(operator_client, now):
    make_scan("late", status=Scan.Status.PENDING, submitted_at=now - timedelta(hours=1))

    row = parse_html(get_list(operator_client)).select_one("#scan-table tbody tr")

    assert {"row-pending", "row-stuck"} <= set(row["class"])
    assert row.select_one("span.badge.badge-stuck") is not None


# --- Search ------------------------------------------------------------------------------------------------


@pytest.fixture
def searchable():
    make_scan(FULL_ID, label="Nightly CRM")
    make_scan(OTHER_ID, label="weekly finance")
    make_scan("legacy_job_7", label="")


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("4788", [FULL_ID]),  # the start of an ID
        ("afec-daa", [FULL_ID]),  # the middle of one
        ("b230b", [FULL_ID]),  # its end
        ("nightly", [FULL_ID]),  # a word of a label
        ("FINANCE", [OTHER_ID]),  # case does not matter, in labels ...
        ("AFEC", [FULL_ID]),  # ... or in IDs
        ("  legacy  ", ["legacy_job_7"]),  # surrounding spaces from a paste are dropped
        ("zzz", []),
    ],
)
def test_search_matches_part_of_a_tracking_id_or_label_in_any_case(operator_client, searchable, q, expected):
    response = get_list(operator_client, "?q=" + q.replace(" ", "+"))

    assert sorted(listed_ids(response)) == sorted(expected)


def test_search_treats_percent_and_underscore_literally(operator_client, searchable):
    make_scan("legacyXjob", label="")

    assert listed_ids(get_list(operator_client, "?q=legacy_")) == ["legacy_job_7"]
    assert listed_ids(get_list(operator_client, "?q=%25")) == []


def test_pasting_a_full_tracking_id_opens_that_scan(operator_client, searchable):
    response = operator_client.get(f"/?q={FULL_ID}")

    assert response.status_code == 302
    assert response["Location"] == f"/scans/{FULL_ID}/"


def test_pasting_a_full_tracking_id_into_the_live_search_redirects_through_htmx(operator_client, searchable):
    response = operator_client.get(f"/?q={FULL_ID}", **HTMX)

    assert response.status_code == 200
    assert response["HX-Redirect"] == f"/scans/{FULL_ID}/"


def test_a_long_fragment_or_an_untracked_full_id_is_searched_not_opened(operator_client, searchable):
    fragment = FULL_ID[:24]  # long enough to look like an ID, but only the start of one
    untracked = "00000000-0000-4000-8000-000000000000"

    assert listed_ids(get_list(operator_client, f"?q={fragment}")) == [FULL_ID]
    response = get_list(operator_client, f"?q={untracked}")
    assert listed_ids(response) == []
    assert "No scans match these filters." in page_text(response)


# --- Data source and dates ---------------------------------------------------------------------------------


def test_the_data_source_filter_lists_only_that_source_and_offers_every_source(operator_client):
    make_scan("from-snowflake", data_source="snowflake")
    make_scan("from-s3", data_source="s3")
    make_scan("no-source")

    response = get_list(operator_client, "?source=snowflake")

    assert listed_ids(response) == ["from-snowflake"]
    options = parse_html(response).select("select#source option")
    assert {option["value"]: option.get_text() for option in options if option["value"]} == {
        "snowflake": "snowflake",
        "s3": "s3",
    }
    assert [option["value"] for option in options if option.has_attr("selected")] == ["snowflake"]


@pytest.fixture
def submitted_around_march():
    def at(day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
        return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC)

    make_scan("before", submitted_at=at(9, 23, 59, 59))
    make_scan("first-instant", submitted_at=at(10))
    make_scan("last-instant", submitted_at=at(12, 23, 59, 59))
    make_scan("after", submitted_at=at(13))
    make_scan("never-submitted")


def test_the_date_range_includes_both_whole_days_in_utc(operator_client, submitted_around_march):
    response = get_list(operator_client, "?from=2026-03-10&to=2026-03-12")

    assert sorted(listed_ids(response)) == ["first-instant", "last-instant"]
    assert parse_html(response).select_one('input[name="from"]')["value"] == "2026-03-10"


def test_swapped_dates_are_swapped_back_with_a_note(operator_client, submitted_around_march):
    response = get_list(operator_client, "?from=2026-03-12&to=2026-03-10")

    assert sorted(listed_ids(response)) == ["first-instant", "last-instant"]
    assert "The 'from' date is after the 'to' date; the dates were swapped." in page_text(response)


def test_either_end_of_the_date_range_can_be_left_open(operator_client, submitted_around_march):
    assert sorted(listed_ids(get_list(operator_client, "?from=2026-03-13"))) == ["after"]
    assert sorted(listed_ids(get_list(operator_client, "?to=2026-03-09"))) == ["before"]


# --- Sorting -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "field"),
    [("started", "started_at"), ("ended", "ended_at"), ("last_change", "last_changed_at")],
)
def test_each_time_column_sorts_both_ways_with_blanks_last(operator_client, key, field):
    moment = timezone.now()
    make_scan("blank")
    make_scan("early", **{field: moment - timedelta(hours=3)})
    make_scan("late", **{field: moment - timedelta(hours=1)})

    assert listed_ids(get_list(operator_client, f"?sort={key}")) == ["early", "late", "blank"]
    assert listed_ids(get_list(operator_client, f"?sort=-{key}")) == ["late", "early", "blank"]


def test_run_time_sorts_both_ways_with_unfinished_scans_last(operator_client):
    start = timezone.now() - timedelta(days=1)
    make_scan("running", started_at=start)
    make_scan("long", started_at=start, ended_at=start + timedelta(minutes=50))
    make_scan("short", started_at=start + timedelta(hours=2), ended_at=start + timedelta(hours=2, seconds=30))
    make_scan("never-started")

    assert listed_ids(get_list(operator_client, "?sort=-run_time")) == [
        "long",
        "short",
        "never-started",
        "running",
    ]
    assert listed_ids(get_list(operator_client, "?sort=run_time")) == ["short", "long", "running", "never-started"]


def test_submitted_sorts_both_ways_and_a_scan_without_one_sorts_by_when_tracking_began(operator_client):
    moment = timezone.now()
    make_scan("older", submitted_at=moment - timedelta(days=2))
    make_scan("unsubmitted", created_at=moment - timedelta(days=1))
    make_scan("newer", submitted_at=moment - timedelta(hours=1))

    assert listed_ids(get_list(operator_client, "?sort=-submitted")) == ["newer", "unsubmitted", "older"]
    assert listed_ids(get_list(operator_client, "?sort=submitted")) == ["older", "unsubmitted", "newer"]
    assert listed_ids(get_list(operator_client)) == ["newer", "unsubmitted", "older"]  # the default


def test_problems_first_lists_failed_then_stuck_then_the_rest_newest_first(operator_client, now):
    ago = lambda **delta: now - timedelta(**delta)  # noqa: E731
    make_scan("fine-new", status=Scan.Status.SUCCESS, submitted_at=ago(minutes=1))
    make_scan("failed-old", status=Scan.Status.FAILED, submitted_at=ago(hours=5))
    make_scan("stuck-waiting", status=Scan.Status.PENDING, submitted_at=ago(hours=2))
    make_scan("waiting", status=Scan.Status.PENDING, submitted_at=ago(minutes=2))
    make_scan("failed-new", status=Scan.Status.FAILED, submitted_at=ago(hours=3))
    make_scan("stuck-running", status=Scan.Status.IN_PROGRESS, submitted_at=ago(hours=4), started_at=ago(hours=3))

    assert listed_ids(get_list(operator_client, "?sort=problems")) == [
        "failed-new",
        "failed-old",
        "stuck-waiting",
        "stuck-running",
        "fine-new",
        "waiting",
    ]


def test_the_sort_column_header_says_which_way_it_sorts(operator_client):
    make_scan()

    headers = parse_html(get_list(operator_client, "?sort=-run_time")).select("#scan-table thead th[aria-sort]")
    sorting = {header.get_text(strip=True): (header["aria-sort"], header.a["href"]) for header in headers}

    assert sorting["Run time"] == ("descending", "?sort=run_time")  # a click turns it round
    assert sorting["Ended"] == ("none", "?sort=-ended")


# --- Paging ------------------------------------------------------------------------------------------------


@pytest.fixture
def thirty_scans():
    moment = timezone.now()
    Scan.objects.bulk_create(
        [Scan(tracking_id=f"page-{n:02d}", submitted_at=moment - timedelta(minutes=n)) for n in range(30)]
    )


def test_pages_split_the_list_and_say_where_you_are(operator_client, thirty_scans):
    first = get_list(operator_client, "?per=25")
    second = get_list(operator_client, "?per=25&page=2")

    assert listed_ids(first) == [f"page-{n:02d}" for n in range(25)]
    assert listed_ids(second) == [f"page-{n:02d}" for n in range(25, 30)]
    assert "Page 2 of 2 · 26\N{EN DASH}30 of 30" in page_text(second)


@pytest.mark.parametrize("page", ["3", "999999", "1" + "0" * 30])
def test_a_page_past_the_end_shows_the_last_page(operator_client, thirty_scans, page):
    response = get_list(operator_client, f"?per=25&page={page}")

    assert listed_ids(response) == [f"page-{n:02d}" for n in range(25, 30)]
    assert "Page 2 of 2" in page_text(response)


@pytest.mark.parametrize("page", ["abc", "0", "-4", "1.5", ""])
def test_a_page_that_is_not_a_positive_whole_number_shows_the_first_page(operator_client, thirty_scans, page):
    # An empty page is first redirected to the URL without it; followed, like a browser would.
    response = operator_client.get(f"/?per=25&page={page}", follow=True)

    assert listed_ids(response)[0] == "page-00"
    assert "Page 1 of 2" in page_text(response)


@pytest.mark.parametrize(("per", "rows"), [("25", 25), ("50", 50), ("100", 60), ("7", 50), ("abc", 50), ("", 50)])
def test_the_page_size_is_25_50_or_100_and_anything_else_means_50(operator_client, per, rows):
    Scan.objects.bulk_create([Scan(tracking_id=f"many-{n:03d}") for n in range(60)])

    assert len(listed_ids(operator_client.get(f"/?per={per}", follow=True))) == rows


def test_changing_a_filter_goes_back_to_the_first_page(operator_client, thirty_scans):
    chip = parse_html(get_list(operator_client, "?per=25&page=2")).select_one("nav.chips a.chip-failed")

    assert chip["href"] == "?per=25&status=FAILED"  # the Failed chip drops page=2


# --- Archived ----------------------------------------------------------------------------------------------


def test_archived_scans_are_hidden_by_default_and_shown_alone_with_the_toggle(operator_client):
    make_scan("tracked")
    make_scan("archived", archived_at=timezone.now(), next_check_at=None)

    default = get_list(operator_client)
    archived = get_list(operator_client, "?archived=1")

    assert listed_ids(default) == ["tracked"]
    assert chip_counts(default)["all"] == 1
    assert listed_ids(archived) == ["archived"]
    assert chip_counts(archived)["all"] == 1
    assert parse_html(archived).select_one("#scan-table tbody .badge-archived").get_text() == "Archived"


# --- Chip counts -------------------------------------------------------------------------------------------


@pytest.fixture
def two_teams(now):
    moment = now - timedelta(minutes=1)
    old = datetime(2026, 1, 5, 12, tzinfo=UTC)
    for status in ("FAILED", "FAILED", "SUCCESS", "IN-PROGRESS"):
        make_scan(label="alpha team", status=status, data_source="s3", submitted_at=moment, started_at=moment)
    make_scan(label="alpha team", status="PENDING", data_source="snowflake", submitted_at=old)  # stuck
    for status in ("SUCCESS", "SUCCESS", "UNKNOWN"):
        make_scan(label="beta team", status=status, data_source="snowflake", submitted_at=old)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", dict(all=8, pending=1, in_progress=1, success=3, failed=2, unknown=1, not_found=0, new=0, stuck=1)),
        (
            "?q=alpha",
            dict(all=5, pending=1, in_progress=1, success=1, failed=2, unknown=0, not_found=0, new=0, stuck=1),
        ),
        (
            "?source=snowflake",
            dict(all=4, pending=1, in_progress=0, success=2, failed=0, unknown=1, not_found=0, new=0, stuck=1),
        ),
        (
            "?to=2026-01-31",
            dict(all=4, pending=1, in_progress=0, success=2, failed=0, unknown=1, not_found=0, new=0, stuck=1),
        ),
        (
            "?q=alpha&source=s3",
            dict(all=4, pending=0, in_progress=1, success=1, failed=2, unknown=0, not_found=0, new=0, stuck=0),
        ),
    ],
)
def test_the_chips_count_what_search_source_and_dates_let_through(operator_client, two_teams, query, expected):
    assert chip_counts(get_list(operator_client, query)) == expected


@pytest.mark.parametrize("status", ["", "FAILED", "SUCCESS", "STUCK", "UNKNOWN"])
def test_choosing_a_status_changes_the_rows_but_not_the_chip_counts(operator_client, two_teams, status):
    response = get_list(operator_client, f"?q=alpha&status={status}" if status else "?q=alpha")

    assert chip_counts(response) == dict(
        all=5, pending=1, in_progress=1, success=1, failed=2, unknown=0, not_found=0, new=0, stuck=1
    )
    key = {"": "all", "STUCK": "stuck"}.get(status, status.lower())
    assert len(listed_ids(response)) == chip_counts(response)[key]


# --- Bad query strings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?status=BOGUS", "Unknown status 'BOGUS' ignored."),
        ("?status=stuck!", "Unknown status 'STUCK!' ignored."),
        ("?sort=sideways", "Unknown sort 'sideways' ignored."),
        ("?sort=-problems", "Unknown sort '-problems' ignored."),
        ("?from=yesterday", "From date 'yesterday' is not a date (YYYY-MM-DD); ignored."),
        ("?to=2026-02-30", "To date '2026-02-30' is not a date (YYYY-MM-DD); ignored."),
        ("?from=%27%3B+DROP+TABLE", 'From date "\'; DROP TABLE" is not a date (YYYY-MM-DD); ignored.'),
    ],
)
def test_a_bad_parameter_is_ignored_with_a_message_not_an_error(operator_client, query, message):
    make_scan("still-listed", status=Scan.Status.SUCCESS, submitted_at=timezone.now())

    for headers in ({}, HTMX):
        response = get_list(operator_client, query, **headers)
        assert message in page_text(response)
        assert listed_ids(response) == ["still-listed"]


@pytest.mark.parametrize(
    "query",
    [
        "?to=9999-12-31",
        "?from=0001-01-01&to=9999-12-31",
        "?page=" + "9" * 400,
        "?per=" + "9" * 400,
        "?q=" + "x" * 5000,
        "?q=%00",
        "?source=%00",
        "?q=%F0%9F%98%80%00%FF",
        "?status=%00&sort=%00&from=%00&archived=%00",
    ],
)
def test_extreme_or_binary_parameters_still_render_the_list(operator_client, query):
    make_scan("still-here", status=Scan.Status.SUCCESS, submitted_at=timezone.now())

    response = operator_client.get(f"/{query}")

    assert response.status_code == 200


def test_a_message_about_a_bad_parameter_is_escaped(operator_client):
    page = get_list(operator_client, "?sort=<script>alert(1)</script>").content.decode()

    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# --- htmx: partial, live poll, header ----------------------------------------------------------------------


def test_an_htmx_request_gets_only_the_table(operator_client):
    make_scan("row")

    partial = get_list(operator_client, **HTMX).content.decode()
    full = get_list(operator_client).content.decode()

    assert partial.lstrip().startswith('<section id="scan-table"')
    assert "<html" not in partial and 'id="live-header"' not in partial and 'id="filters"' not in partial
    assert "<html" in full and 'id="live-header"' in full and 'id="scan-table"' in full


def test_an_htmx_history_restore_gets_the_full_page(operator_client):
    page = get_list(operator_client, **HTMX, HTTP_HX_HISTORY_RESTORE_REQUEST="true").content.decode()

    assert "<html" in page


def test_the_live_poll_gets_204_while_nothing_changes_and_the_new_table_after_a_change(operator_client):
    scan = make_scan("to-relabel", label="before")
    poll = table_poll_url(get_list(operator_client, "?q=relabel&sort=-ended"))

    assert "q=relabel" in poll and "sort=-ended" in poll  # the poll keeps the filters
    unchanged = operator_client.get(poll, **HTMX)
    assert unchanged.status_code == 204
    assert unchanged.content == b""

    scans_set_label(scan_ids=[scan.pk], label="after the change")
    changed = get_list(operator_client, poll, **HTMX)

    assert "after the change" in changed.content.decode()
    assert table_poll_url(changed) != poll  # the next poll asks about the new version
    assert operator_client.get(table_poll_url(changed), **HTMX).status_code == 204


def test_a_poll_notices_a_change_to_a_scan_on_another_page(operator_client):
    make_scan("on-this-page")
    elsewhere = make_scan("archived-elsewhere", archived_at=timezone.now())
    poll = table_poll_url(get_list(operator_client))

    scans_set_label(scan_ids=[elsewhere.pk], label="x")

    assert operator_client.get(poll, **HTMX).status_code == 200


def test_a_version_without_htmx_is_ignored_and_the_full_page_served(operator_client):
    response = get_list(operator_client, f"?v={selectors.scans_version()}")

    assert "<html" in response.content.decode()


def test_the_header_part_shows_the_counts_and_polls_with_its_own_version(operator_client, now):
    make_scan(status=Scan.Status.FAILED, started_at=now - timedelta(hours=1), ended_at=now - timedelta(minutes=50))
    make_scan(
        status=Scan.Status.SUCCESS, started_at=now - timedelta(hours=2), ended_at=now - timedelta(minutes=30)
    )
    make_scan(status=Scan.Status.PENDING, submitted_at=now - timedelta(hours=2))

    header = operator_client.get("/header/", **HTMX)
    text = page_text(header)
    fragment = parse_html(header)

    assert fragment.find()["id"] == "live-header"  # the fragment is the header itself, not a page around it
    assert fragment.select_one("#scan-table") is None
    assert "50.0%" in text and "1 of 2 finished" in text  # failure rate over the last 24 h
    assert fragment.select_one('a.stat[href="?status=STUCK"] strong').get_text() == "1"
    assert "Not polled yet" in text
    poll = header_poll_url(header)
    assert operator_client.get(poll, **HTMX).status_code == 204

    make_refresh_run()
    refreshed = get_list(operator_client, poll, **HTMX)

    assert "Not polled yet" not in page_text(refreshed)
    assert header_poll_url(refreshed) != poll


def test_the_full_page_loads_its_header_separately_and_the_header_polls_its_version(operator_client):
    response = get_list(operator_client)
    loader = parse_html(response).select_one("section#live-header")
    header = operator_client.get("/header/", **HTMX)

    assert (loader["hx-get"], loader["hx-trigger"]) == ("/header/", "load")
    assert "Failure rate" not in page_text(response)  # the table is not held up by the 24 h figures
    assert header_poll_url(header) == f"/header/?v={header_stats.header_version()}"


# --- Query counts ------------------------------------------------------------------------------------------


@pytest.fixture
def hundred_and_fifty_scans():
    moment = timezone.now()
    statuses = Scan.Status.values
    Scan.objects.bulk_create(
        [
            Scan(
                tracking_id=f"q-{n:03d}",
                status=statuses[n % len(statuses)],
                label=f"label {n % 7}",
                data_source=f"source-{n % 3}",
                submitted_at=moment - timedelta(minutes=n),
                started_at=moment - timedelta(minutes=n - 1),
                ended_at=moment if n % 2 else None,
                error_message="Quota exceeded\nmore" if n % 5 == 0 else "",
            )
            for n in range(150)
        ]
    )


@pytest.mark.parametrize("per", [25, 100])
def test_the_live_table_costs_at_most_seven_queries_whatever_the_page_size(
    operator_client, hundred_and_fifty_scans, django_assert_max_num_queries, per
):
    get_list(operator_client, **HTMX)  # warm-up: the session is in the cache from here on

    # The user and permissions (3), the version, the distinct labels (a search's label half), counts, the page.
    with django_assert_max_num_queries(7):
        response = get_list(operator_client, f"?per={per}&sort=problems&q=q-0", **HTMX)

    assert len(listed_ids(response)) == per


def test_the_nothing_changed_poll_costs_at_most_four_queries(
    operator_client, hundred_and_fifty_scans, django_assert_max_num_queries
):
    poll = table_poll_url(get_list(operator_client, **HTMX))

    with django_assert_max_num_queries(4):
        response = operator_client.get(poll, **HTMX)

    assert response.status_code == 204


def test_not_found_scans_have_their_own_chip_and_filter_apart_from_unknown(operator_client):
    lost = make_scan(status="NOT-FOUND")
    make_scan(status="UNKNOWN")

    response = get_list(operator_client, "?status=NOT-FOUND")

    assert (chip_counts(response)["not_found"], chip_counts(response)["unknown"]) == (1, 1)
    assert listed_ids(response) == [lost.tracking_id]


# --- Time presets, the ended time, the viewer's zone ------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "ago", "listed"),
    [
        ("1h", timedelta(minutes=59, seconds=59), True),
        ("1h", timedelta(hours=1), True),
        ("1h", timedelta(hours=1, seconds=1), False),
        ("24h", timedelta(hours=23, minutes=59), True),
        ("24h", timedelta(hours=24, seconds=1), False),
        ("7d", timedelta(days=6, hours=23), True),
        ("7d", timedelta(days=7, seconds=1), False),
    ],
)
def test_a_time_preset_lists_the_scans_submitted_within_it_up_to_now(operator_client, now, when, ago, listed):
    make_scan("in-question", submitted_at=now - ago)
    make_scan("just-now", submitted_at=now)

    response = get_list(operator_client, f"?when={when}")

    assert sorted(listed_ids(response)) == (["in-question", "just-now"] if listed else ["just-now"])
    assert chip_counts(response)["all"] == (2 if listed else 1)


def test_the_ended_time_picks_scans_by_when_they_ended_not_when_they_were_submitted(operator_client, now):
    long_ago = now - timedelta(days=30)
    make_scan(
        "ended-an-hour-ago", status=Scan.Status.FAILED, submitted_at=long_ago, ended_at=now - timedelta(hours=1)
    )
    make_scan("ended-two-days-ago", status=Scan.Status.FAILED, submitted_at=now, ended_at=now - timedelta(days=2))
    make_scan("still-running", status=Scan.Status.IN_PROGRESS, submitted_at=now, started_at=now)

    ended = get_list(operator_client, "?time=ended&when=24h&status=FAILED")
    submitted = get_list(operator_client, "?time=submitted&when=24h")

    assert listed_ids(ended) == ["ended-an-hour-ago"]
    assert chip_counts(ended)["failed"] == 1
    assert sorted(listed_ids(submitted)) == ["ended-two-days-ago", "still-running"]


def test_custom_days_are_whole_days_on_the_viewers_clock_and_the_inputs_name_the_zone(operator_client):
    operator_client.cookies["tz"] = "Europe/Berlin"  # UTC+1 in March before the DST change
    make_scan("berlin-10th-00-30", submitted_at=datetime(2026, 3, 9, 23, 30, tzinfo=UTC))
    make_scan("berlin-10th-23-30", submitted_at=datetime(2026, 3, 10, 22, 30, tzinfo=UTC))
    make_scan("berlin-11th-00-30", submitted_at=datetime(2026, 3, 10, 23, 30, tzinfo=UTC))

    response = get_list(operator_client, "?when=custom&from=2026-03-10&to=2026-03-10")

    assert sorted(listed_ids(response)) == ["berlin-10th-00-30", "berlin-10th-23-30"]
    page = parse_html(response)
    assert page.select_one('label[for="from"]').get_text(strip=True) == "From (Europe/Berlin)"
    assert page.select_one('label[for="to"]').get_text(strip=True) == "To (Europe/Berlin)"
    assert page.select_one('input[name="when"][checked]')["value"] == "custom"


def test_custom_days_apply_to_the_ended_time_when_it_is_chosen(operator_client):
    make_scan(
        "ended-on-the-10th",
        submitted_at=datetime(2026, 3, 1, tzinfo=UTC),
        ended_at=datetime(2026, 3, 10, 12, tzinfo=UTC),
    )
    make_scan("submitted-on-the-10th", submitted_at=datetime(2026, 3, 10, 12, tzinfo=UTC))

    response = get_list(operator_client, "?time=ended&when=custom&from=2026-03-10&to=2026-03-10")

    assert listed_ids(response) == ["ended-on-the-10th"]
    assert parse_html(response).select_one('select[name="time"] option[selected]')["value"] == "ended"


def test_a_preset_ignores_custom_days_left_in_the_query_string(operator_client, now):
    make_scan("recent", submitted_at=now - timedelta(minutes=5))
    make_scan("in-2020", submitted_at=datetime(2020, 1, 1, 12, tzinfo=UTC))

    response = get_list(operator_client, "?when=1h&from=2020-01-01&to=2019-12-01")

    assert listed_ids(response) == ["recent"]
    page = parse_html(response)
    assert page.select_one('input[name="when"][checked]')["value"] == "1h"
    assert page.select_one('input[name="from"]')["value"] == ""
    assert "swapped" not in page_text(response)


def test_days_without_a_preset_from_an_older_link_are_a_custom_range(operator_client, submitted_around_march):
    response = get_list(operator_client, "?from=2026-03-10&to=2026-03-12")

    assert sorted(listed_ids(response)) == ["first-instant", "last-instant"]
    assert parse_html(response).select_one('input[name="when"][checked]')["value"] == "custom"


def test_no_time_range_checks_any_time(operator_client):
    response = get_list(operator_client)

    assert parse_html(response).select_one('input[name="when"][checked]')["value"] == ""


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?when=fortnight", "Unknown time range 'fortnight' ignored."),
        ("?time=created", "Unknown time field 'created' ignored."),
    ],
)
def test_an_unknown_time_range_or_field_is_ignored_with_a_message(operator_client, now, query, message):
    make_scan("old", submitted_at=now - timedelta(days=300))

    response = get_list(operator_client, query)

    assert message in page_text(response)
    assert listed_ids(response) == ["old"]


# --- Clean URLs ---------------------------------------------------------------------------------------------


def test_a_shared_link_with_empty_parameters_is_redirected_to_the_clean_url(operator_client):
    response = operator_client.get("/?q=&status=FAILED&source=&from=&to=&when=&page=")

    assert response.status_code == 302
    assert response["Location"] == "/?status=FAILED"


def test_links_built_from_an_htmx_request_with_empty_parameters_carry_none(operator_client):
    make_scan("one", status=Scan.Status.FAILED)

    response = get_list(operator_client, "?q=&status=FAILED&source=&when=", **HTMX)

    chip_links = [chip["href"] for chip in parse_html(response).select("nav.chips a.chip")]
    assert "?status=SUCCESS" in chip_links
    for link in [*chip_links, table_poll_url(response)]:
        assert "q=" not in link and "source=" not in link and "when=" not in link


def test_the_list_varies_on_the_htmx_header_so_back_never_shows_a_cached_fragment(operator_client):
    for headers in ({}, HTMX):
        assert "HX-Request" in get_list(operator_client, "?status=FAILED", **headers)["Vary"]


# --- The table that fits ------------------------------------------------------------------------------------


def test_a_long_tracking_id_shows_its_ends_and_keeps_the_whole_id_in_its_title_and_text(operator_client):
    make_scan(FULL_ID)

    link = parse_html(get_list(operator_client)).select_one("td.id-cell a.tid")

    assert link["title"] == FULL_ID
    visible = [span.get_text() for span in link.find_all("span") if "tid-mid" not in span.get("class", [])]
    assert visible == ["47882682", "…", "1b230b"]
    assert link.select_one(".tid-cut")["aria-hidden"] == "true"  # the ellipsis is not part of the link's name
    assert link.get_text().replace("…", "") == FULL_ID


def test_the_error_column_holds_the_first_line_and_the_whole_message_in_its_title(operator_client):
    message = "Permission denied reading object CustomerDB/Customerstable\nrole 'scanner' lacks SELECT"
    make_scan("denied", status=Scan.Status.FAILED, error_message=message)

    error = parse_html(get_list(operator_client)).select_one("td.error-cell [data-error]")

    assert error.get_text() == "Permission denied reading object CustomerDB/Customerstable"
    assert error["title"] == message
