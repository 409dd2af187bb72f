"""scans.models.bulk.update_each: many rows' own values saved by one statement, as the refresh writes news."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from scans.models import Scan
from scans.models.bulk import update_each
from tests.factories import make_scan

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def test_each_row_gets_its_own_values_of_the_named_fields_only():
    scans = [make_scan(f"bulk-{n}", label="kept") for n in range(3)]
    for n, scan in enumerate(scans):
        scan.status = [Scan.Status.PENDING, Scan.Status.IN_PROGRESS, Scan.Status.FAILED][n]
        scan.started_at = T0.replace(minute=n)
        scan.last_raw_answer = {"tracking_id": scan.tracking_id, "error_msg": f"err {n}", "nested": [n, None]}
        scan.label = "not saved"

    update_each(scans, ["status", "started_at", "last_raw_answer"])

    saved = {s.tracking_id: s for s in Scan.objects.filter(tracking_id__startswith="bulk-")}
    assert [saved[f"bulk-{n}"].status for n in range(3)] == ["PENDING", "IN-PROGRESS", "FAILED"]
    assert [saved[f"bulk-{n}"].started_at for n in range(3)] == [T0, T0.replace(minute=1), T0.replace(minute=2)]
    assert saved["bulk-2"].last_raw_answer == {"tracking_id": "bulk-2", "error_msg": "err 2", "nested": [2, None]}
    assert {s.label for s in saved.values()} == {"kept"}


def test_the_statement_is_the_same_for_one_row_or_many():
    few, many = [make_scan(f"few-{n}") for n in range(1)], [make_scan(f"many-{n}") for n in range(40)]

    sent = []
    for rows in (few, many):
        with CaptureQueriesContext(connection) as queries:
            update_each(rows, ["label"])
        sent.append(len(queries))

    assert sent == [1, 1]


def test_no_rows_sends_nothing():
    with CaptureQueriesContext(connection) as queries:
        update_each([], ["label"])

    assert len(queries) == 0
