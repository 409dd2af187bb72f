"""What keeps the list fast at a million scans: the depth cap, problems-first read in index-ordered parts, cached
counts that still follow every change, indexed search kept in step with the table, gzip, and a plan per query
that an index serves."""

import gzip
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scans import counts, header_stats, search, selectors
from scans.models import Scan, ScanStatusTally, stuck_condition
from scans.search import FTS_TABLE, sqlite_has_trigram
from scans.selectors import ScanFilters
from tests.factories import make_scan
from tests.helpers import HTMX, chip_counts, get_list, listed_ids, parse_html

pytestmark = pytest.mark.django_db


def _scans(count: int, now, prefix: str = "row", **fields) -> list[str]:
    """`count` scans submitted a minute apart, newest first in the returned IDs."""
    for n in range(count):
        make_scan(f"{prefix}-{n:03d}", submitted_at=now - timedelta(minutes=n + 1), **fields)
    return [f"{prefix}-{n:03d}" for n in range(count)]


# --- The depth cap -----------------------------------------------------------------------------------------


def test_the_list_pages_through_at_most_max_listed_rows_and_says_to_refine(operator_client, now, monkeypatch):
    monkeypatch.setattr(selectors, "MAX_LISTED", 30)
    ids = _scans(40, now, status=Scan.Status.SUCCESS)

    last = get_list(operator_client, "?per=25&page=999")
    note = parse_html(last).select_one("[data-beyond-cap]")

    assert listed_ids(last) == ids[25:30]  # the last reachable page, not an error and not rows past the cap
    assert "first 30 of 40" in note.get_text()
    assert chip_counts(last)["all"] == 40  # the chips still count everything


def test_under_the_cap_no_refine_note_is_shown(operator_client, now):
    _scans(3, now)

    assert parse_html(get_list(operator_client)).select_one("[data-beyond-cap]") is None


# --- Failed & stuck first, in parts -------------------------------------------------------------------------


@pytest.fixture
def problems(now):
    """12 failed, 10 stuck (pending and running) and 14 fine scans, interleaved in submission time."""
    failed = _scans(12, now, "failed", status=Scan.Status.FAILED)
    stuck = [f"stuck-{n:03d}" for n in range(10)]
    for n, tracking_id in enumerate(stuck):
        submitted = now - timedelta(hours=3, minutes=n)
        if n % 2:
            make_scan(tracking_id, status=Scan.Status.PENDING, submitted_at=submitted)
        else:
            make_scan(tracking_id, status=Scan.Status.IN_PROGRESS, submitted_at=submitted, started_at=submitted)
    fine = _scans(14, now - timedelta(seconds=30), "fine", status=Scan.Status.SUCCESS)
    return failed, stuck, fine


def test_problems_first_pages_across_its_parts_in_one_order(operator_client, problems):
    failed, stuck, fine = problems

    first = listed_ids(get_list(operator_client, "?sort=problems&per=25"))
    second = listed_ids(get_list(operator_client, "?sort=problems&per=25&page=2"))

    assert first + second == failed + stuck + fine
    assert len(first) == 25


def test_a_page_spanning_the_parts_is_read_in_one_query(operator_client, problems, django_assert_max_num_queries):
    get_list(operator_client, "?sort=problems&per=25", **HTMX)  # warm-up: session, and the counts cached

    with CaptureQueriesContext(connection) as queries:
        get_list(operator_client, "?sort=problems&per=25", **HTMX)

    assert (
        sum("scans_scan" in q["sql"] and "COUNT(" not in q["sql"].upper() for q in queries) == 2
    )  # version, rows


def test_problems_first_within_a_status_keeps_its_stuck_ones_first(operator_client, problems):
    _, stuck, _ = problems
    waiting = make_scan("waiting", status=Scan.Status.PENDING, submitted_at=timezone.now())

    listed = listed_ids(get_list(operator_client, "?sort=problems&status=PENDING&per=25"))

    assert listed == [tracking_id for tracking_id in stuck if int(tracking_id[-3:]) % 2] + [waiting.tracking_id]


# --- Cached counts ----------------------------------------------------------------------------------------


def _count_queries(queries) -> int:
    return sum("COUNT(" in q["sql"].upper() for q in queries)


def test_counts_are_not_recounted_while_nothing_changes(operator_client, problems):
    get_list(operator_client, **HTMX)
    operator_client.get("/header/", **HTMX)

    with CaptureQueriesContext(connection) as queries:
        get_list(operator_client, "?status=FAILED", **HTMX)
        operator_client.get("/header/", **HTMX)

    assert _count_queries(queries) == 0


def test_a_changed_scan_changes_the_cached_counts_at_once(operator_client, problems, time_machine):
    before = chip_counts(get_list(operator_client, **HTMX))

    time_machine.shift(timedelta(milliseconds=1))  # the same time bucket: only the version can tell
    Scan.objects.filter(tracking_id="fine-000").write(status=Scan.Status.FAILED)
    after = chip_counts(get_list(operator_client, **HTMX))

    assert (after["failed"], after["success"]) == (before["failed"] + 1, before["success"] - 1)


def test_a_deleted_scan_leaves_the_counts_within_the_cache_time(operator_client, problems, time_machine):
    before = chip_counts(get_list(operator_client, **HTMX))["all"]
    Scan.objects.filter(tracking_id="fine-005").delete()  # the newest updated_at stays: the version cannot tell

    time_machine.shift(timedelta(seconds=selectors.COUNTS_CACHE_SECONDS))

    assert chip_counts(get_list(operator_client, **HTMX))["all"] == before - 1


def test_filtered_counts_are_cached_per_filter(operator_client, problems):
    failed_matches = chip_counts(get_list(operator_client, "?q=failed-00"))
    fine_matches = chip_counts(get_list(operator_client, "?q=fine-00"))

    assert (failed_matches["all"], failed_matches["failed"]) == (10, 10)
    assert (fine_matches["all"], fine_matches["success"]) == (10, 10)


# --- Indexed search, kept in step -------------------------------------------------------------------------


def _search(q: str) -> set[str]:
    matching = selectors.scans_matching(filters=ScanFilters(q=q))
    return set(matching.values_list("tracking_id", flat=True))


def test_search_follows_inserts_label_changes_and_deletes():
    scan = make_scan("a1b2c3d4-e5f6-4711-8000-00000000abcd", label="Payroll EU")
    make_scan("other-0001", label="Warehouse")

    assert _search("C3D4-E5") == {scan.tracking_id}
    assert _search("yroll e") == {scan.tracking_id}
    Scan.objects.filter(pk=scan.pk).write(label="Claims intake")
    assert _search("yroll") == set()
    assert _search("ms int") == {scan.tracking_id}
    scan.delete()
    assert _search("c3d4") == set()


def test_a_search_shorter_than_a_trigram_finds_labels_but_not_tracking_ids():
    make_scan("zq-0001", label="")
    make_scan("other-0001", label="a zq label")
    make_scan("archived-0001", label="old zq", archived_at=timezone.now())

    assert _search("zQ") == {"other-0001"}
    assert _search("zq-") == {"zq-0001"}
    archived = selectors.scans_matching(filters=ScanFilters(q="zq", archived=True))
    assert set(archived.values_list("tracking_id", flat=True)) == {"archived-0001"}


def _search_counts(q: str, **filters) -> dict[str, int]:
    page = selectors.scan_list_for_dashboard(filters=ScanFilters(q=q, **filters), now=timezone.now())
    return page.counts


def test_a_search_counts_label_and_tracking_id_matches_once_each():
    make_scan("by-label-1", label="Payroll EU", status=Scan.Status.FAILED)
    make_scan("by-label-2", label="payroll us", status=Scan.Status.SUCCESS)
    make_scan("yrol-in-id-and-label", label="Payroll EU", status=Scan.Status.SUCCESS)
    make_scan("yrol-in-id-only", label="Warehouse", status=Scan.Status.PENDING)
    make_scan("neither", label="Warehouse")
    make_scan("archived-match", label="Payroll EU", archived_at=timezone.now())

    counts = _search_counts("YROL")

    assert (counts["all"], counts["failed"], counts["success"], counts["pending"]) == (4, 1, 2, 1)
    assert _search("YROL") == {"by-label-1", "by-label-2", "yrol-in-id-and-label", "yrol-in-id-only"}


def test_the_archive_is_searched_by_label_too():
    make_scan("archived-match", label="Payroll EU", archived_at=timezone.now())
    make_scan("tracked-match", label="Payroll EU")

    matching = selectors.scans_matching(filters=ScanFilters(q="yrol", archived=True))

    assert set(matching.values_list("tracking_id", flat=True)) == {"archived-match"}
    assert _search_counts("yrol", archived=True)["all"] == 1


def test_with_more_labels_than_are_read_a_search_still_finds_and_counts_them(monkeypatch):
    monkeypatch.setattr(search, "MAX_LABELS_READ", 2)
    for n in range(3):
        make_scan(f"many-{n}", label=f"Job {n} payroll")

    assert search.tracked_labels() is None
    assert _search_counts("payroll")["all"] == 3


def test_the_label_half_of_a_search_is_counted_from_the_label_index():
    make_scan("by-label", label="Payroll EU")
    terms = search.search_terms("yrol", labels=search.tracked_labels())
    by_label = Scan.objects.tracked().filter(label__in=terms.labels).values("status").annotate(n=Count("*"))

    assert terms.labels == ["Payroll EU"]
    assert "scan_tracked_label" in _plan(by_label.order_by())


@pytest.mark.skipif(connection.vendor != "sqlite" or not sqlite_has_trigram(), reason="SQLite FTS5 trigram only")
def test_on_sqlite_a_search_reads_the_trigram_table():
    plan = _plan(selectors.scans_matching(filters=ScanFilters(q="abcdef")))

    assert FTS_TABLE in plan and "VIRTUAL TABLE INDEX" in plan


# --- gzip ---------------------------------------------------------------------------------------------------


def test_pages_are_gzipped_for_browsers_that_accept_it(operator_client, now):
    _scans(30, now)

    response = operator_client.get("/", HTTP_ACCEPT_ENCODING="gzip, deflate, br")

    assert response["Content-Encoding"] == "gzip"
    assert b"row-029" in gzip.decompress(response.content)


# --- Every list query is served by an index -----------------------------------------------------------------


def _plan(queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        else:
            # A handful of rows would always be read sequentially; forbid it to see whether an index can serve.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_sort = off")
            cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(str(row[-1]) for row in cursor.fetchall())


def _list_queries(now) -> dict[str, object]:
    """The row queries of the list's default order, a status chip, a deep page and each problems-first part."""
    tracked = Scan.objects.tracked()
    counts = dict.fromkeys(("all", "failed", "stuck"), 100_000)
    failed, _, rest = (part for part, _ in selectors._problems_first(tracked, ScanFilters(), counts, now).parts)
    return {
        "default": selectors._ordered(tracked, "-submitted", now)[:50],
        "status": selectors._ordered(tracked.filter(status=Scan.Status.FAILED), "-submitted", now)[:50],
        "deep page": selectors._ordered(tracked, "-submitted", now)[9950:10000],
        "problems, failed": failed[:50],
        "problems, rest": rest[:50],
        "stuck, pending half": tracked.filter(stuck_condition(now).children[0]).values("pk"),
        "stuck, running half": tracked.filter(stuck_condition(now).children[1]).values("pk"),
    }


@pytest.mark.parametrize(
    "name",
    [
        "default",
        "status",
        "deep page",
        "problems, failed",
        "problems, rest",
        "stuck, pending half",
        "stuck, running half",
    ],
)
def test_each_list_query_walks_an_index_not_the_table(name, now):
    make_scan("one", submitted_at=now)

    plan = _plan(_list_queries(now)[name])

    if connection.vendor == "sqlite":
        assert "USE TEMP B-TREE" not in plan  # no sort of every row
        assert "SCAN scans_scan\n" not in plan + "\n" and "INDEX" in plan
    else:
        assert "Seq Scan" not in plan and "Sort" not in plan.replace("Incremental Sort", "")


# --- The trigger-kept tally ---------------------------------------------------------------------------------


def _tally() -> dict[str, int]:
    counts = selectors.tracked_status_counts(now=timezone.now())
    return {key: n for key, n in counts.items() if n and key != "stuck"}


def test_the_tally_follows_inserts_status_changes_archiving_and_deletes():
    first = make_scan("t-1", status=Scan.Status.PENDING)
    make_scan("t-2", status=Scan.Status.PENDING)
    assert _tally() == {"all": 2, "pending": 2}

    Scan.objects.filter(pk=first.pk).write(status=Scan.Status.FAILED)
    assert _tally() == {"all": 2, "pending": 1, "failed": 1}

    Scan.objects.filter(pk=first.pk).write(archived_at=timezone.now())
    assert _tally() == {"all": 1, "pending": 1}

    Scan.objects.filter(pk=first.pk).write(archived_at=None)
    Scan.objects.filter(tracking_id="t-2").delete()
    assert _tally() == {"all": 1, "failed": 1}


def test_rewriting_the_same_status_adds_no_tally_row():
    make_scan("t-1", status=Scan.Status.IN_PROGRESS)
    rows = ScanStatusTally.objects.count()

    Scan.objects.filter(tracking_id="t-1").update(status=Scan.Status.IN_PROGRESS, raw_status="IN-PROGRESS")

    assert ScanStatusTally.objects.count() == rows


def test_compacting_the_tally_keeps_every_count(monkeypatch):
    for n in range(12):
        scan = make_scan(f"t-{n}", status=Scan.Status.PENDING)
        Scan.objects.filter(pk=scan.pk).write(status=Scan.Status.SUCCESS if n % 3 else Scan.Status.FAILED)
    before = _tally()
    monkeypatch.setattr(counts, "TALLY_COMPACT_ROWS", 10)

    selectors.tracked_status_counts(now=timezone.now())  # over the limit: compacts

    assert ScanStatusTally.objects.count() == 2
    assert _tally() == before == {"all": 12, "success": 8, "failed": 4}


def test_a_tally_emptied_before_its_scans_were_deleted_is_recounted():
    make_scan("t-1", status=Scan.Status.PENDING)
    make_scan("t-2", status=Scan.Status.FAILED)
    ScanStatusTally.objects.all().delete()  # as SQLite's flush may do, before deleting the scans
    Scan.objects.filter(tracking_id="t-1").delete()
    make_scan("t-3", status=Scan.Status.SUCCESS)

    assert _tally() == {"all": 2, "failed": 1, "success": 1}


@pytest.mark.django_db(transaction=True)
def test_a_flushed_database_counts_a_new_scan_once(monkeypatch):
    sql_flush = connection.ops.sql_flush

    def tally_first(*args, **kwargs) -> list[str]:  # SQLite's flush deletes tables in a set's (random) order
        tally = ScanStatusTally._meta.db_table
        return sorted(sql_flush(*args, **kwargs), key=lambda statement: tally not in statement)

    monkeypatch.setattr(connection.ops, "sql_flush", tally_first)
    make_scan("f-1", status=Scan.Status.FAILED)
    call_command("flush", interactive=False, verbosity=0)
    make_scan("f-2", status=Scan.Status.FAILED)

    assert _tally() == {"all": 1, "failed": 1}


# --- The header's 24 h figures, summed and ranked by the database --------------------------------------------


def test_the_day_figures_bucket_by_utc_hour_and_rank_run_times(now):
    ended = now.replace(minute=30, second=0) - timedelta(hours=2)
    for n, minutes in enumerate([1, 2, 3, 4, 10]):
        status = Scan.Status.FAILED if n == 4 else Scan.Status.SUCCESS
        make_scan(status=status, started_at=ended - timedelta(minutes=minutes), ended_at=ended)
    make_scan(status=Scan.Status.SUCCESS, ended_at=ended)  # never seen starting: counted, not timed
    make_scan(status=Scan.Status.SUCCESS, started_at=now - timedelta(days=3), ended_at=now - timedelta(days=2))

    stats = header_stats.dashboard_header_stats(now=now)
    bar = stats.hours[21]  # 23 hours before this one's start is bar 0

    assert bar.start == ended.replace(minute=0) and (bar.succeeded, bar.failed) == (5, 1)
    assert (stats.finished_24h, stats.failed_24h) == (6, 1)
    assert (stats.p50_run_seconds, stats.p95_run_seconds) == pytest.approx((180.0, 600.0), abs=0.01)
    assert sum(hour.succeeded + hour.failed for hour in stats.hours) == 6


def test_a_scan_that_finishes_shows_in_the_day_figures_and_the_counts_at_once(now, time_machine):
    now = now.replace(second=10)
    time_machine.move_to(now, tick=False)
    running = make_scan(status=Scan.Status.IN_PROGRESS, started_at=now - timedelta(minutes=3))
    before = header_stats.dashboard_header_stats(now=now)

    later = now + timedelta(seconds=1)  # the same minute: the day figures read before are still cached
    time_machine.move_to(later, tick=False)
    Scan.objects.filter(pk=running.pk).write(status=Scan.Status.FAILED, ended_at=later)
    after = header_stats.dashboard_header_stats(now=later)

    assert (before.counts["failed"], before.failed_24h) == (0, 0)
    assert (after.counts["failed"], after.failed_24h, after.finished_24h) == (1, 1, 1)
