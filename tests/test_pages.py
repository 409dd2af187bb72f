"""The first page: login required, and the data the refresh stored, shown safely."""

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from scans.models import Scan
from tests.factories import make_refresh_run, make_scan
from tests.helpers import parse_html

pytestmark = pytest.mark.django_db


def test_the_scan_list_needs_a_login(client):
    response = client.get(reverse("scans:list"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_the_login_page_renders(client):
    response = client.get(reverse("login"))

    assert response.status_code == 200
    assert parse_html(response).select_one('form input[name="username"]') is not None


def test_the_scan_list_shows_status_durations_and_errors(operator_client):
    make_scan(
        "47882682-9f38-4f45-afec-daadaa1b230b",
        label="nightly CRM",
        status=Scan.Status.FAILED,
        submitted_at=datetime(2026, 11, 28, 9, 0, tzinfo=UTC),
        started_at=datetime(2026, 11, 28, 9, 2, 30, tzinfo=UTC),
        ended_at=datetime(2026, 11, 28, 9, 10, 35, tzinfo=UTC),
        error_message="Permission denied reading CustomerDB\nsecond line",
    )
    make_refresh_run(ids_asked=1)

    response = operator_client.get(reverse("scans:list"))
    page = response.content.decode()
    error = parse_html(response).select_one("#scan-table tbody .error-cell .error-text")

    assert "47882682-9f38-4f45-afec-daadaa1b230b" in page
    assert "Failed" in page
    assert "2m 30s" in page  # queue wait
    assert "8m 05s" in page  # run time
    assert error.get_text() == "Permission denied reading CustomerDB"  # the first line only; all of it on hover
    assert error["title"] == "Permission denied reading CustomerDB\nsecond line"


@pytest.mark.parametrize("demo_mode", [True, False])
def test_only_demo_mode_says_demo_data(operator_client, settings, demo_mode):
    settings.DEMO_MODE = demo_mode

    page = operator_client.get(reverse("scans:list")).content.decode()

    assert ("Demo data" in page) is demo_mode


def test_an_api_error_with_html_is_rendered_escaped(operator_client):
    make_scan("x1", status=Scan.Status.FAILED, error_message="<img src=x onerror=alert(1)>")

    page = operator_client.get(reverse("scans:list")).content.decode()

    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_the_token_never_appears_in_the_page(operator_client, settings):
    settings.PROTECTO_AUTH_TOKEN = "tok-very-secret-123456"

    page = operator_client.get(reverse("scans:list")).content.decode()

    assert "tok-very-secret-123456" not in page
