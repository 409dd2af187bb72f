"""Hostile input (NUL bytes, integers past 64 bits, 10 KB strings) gets a 4xx or a clean page, never a 500."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from django.urls import URLPattern, URLResolver

from scans import urls as scan_urls
from scans.models import AlertMute
from tests.factories import make_scan

HUGE_INT = "99999999999999999999"
HOSTILE_VALUES = ["\x00", HUGE_INT, "-1", "x" * 10_000, "abc\x00def", "1e309", "' OR 1=1 --"]
# Every field name any form of the app reads, so each POST sweeps every form.
POST_FIELDS = (
    "ids",
    "label",
    "scan",
    "email",
    "kinds",
    "until",
    "reason",
    "next",
    "csv_file",
    "tracking_ids",
    "q",
)


@pytest.fixture
def client_as_operator(operator_client):
    # Django's test client raises the view's exception instead of answering 500: make it answer like production.
    operator_client.raise_request_exception = False
    return operator_client


@pytest.fixture
def superuser_client(client, db):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    client.raise_request_exception = False
    return client


def _path_variants(pattern: URLPattern) -> list[str]:
    """The pattern's path with each hostile value in every parameter (URL-encoded, as a browser would send it)."""
    route = str(pattern.pattern)
    if "<" not in route:
        return ["/" + route]
    return ["/" + re.sub(r"<[^>]+>", quote(value, safe=""), route) for value in [*HOSTILE_VALUES, "not-a-number"]]


def _every_pattern() -> list[URLPattern]:
    return [entry for entry in scan_urls.urlpatterns if isinstance(entry, URLPattern | URLResolver)]


def _query(value: str) -> str:
    names = ("q", "status", "page", "per_page", "sort", "source", "kind", "state", "v", "label", "since", "chip")
    return "&".join(f"{name}={quote(value, safe='')}" for name in names)


@pytest.mark.django_db
@pytest.mark.parametrize("pattern", _every_pattern(), ids=lambda pattern: str(pattern.pattern))
def test_no_url_of_the_app_answers_500_to_hostile_paths_queries_or_posts(client_as_operator, pattern):
    make_scan("hostile-scan")
    failures = []
    for path in _path_variants(pattern):
        for value in HOSTILE_VALUES:
            get = client_as_operator.get(f"{path}?{_query(value)}")
            post = client_as_operator.post(path, dict.fromkeys(POST_FIELDS, value))
            htmx = client_as_operator.get(f"{path}?{_query(value)}", headers={"HX-Request": "true"})
            failures += [(path[:60], value[:20], r.status_code) for r in (get, post, htmx) if r.status_code >= 500]
    assert failures == []


@pytest.mark.django_db
@pytest.mark.parametrize("mute_id", ["abc", HUGE_INT, "-1", "1.5", "%00"])
def test_deleting_a_mute_with_a_bad_id_is_a_4xx(client_as_operator, mute_id):
    response = client_as_operator.post(f"/alerts/mutes/{mute_id}/delete/")

    assert 400 <= response.status_code < 500


@pytest.mark.django_db
def test_a_mute_with_a_real_id_is_still_deleted(client_as_operator):
    mute = AlertMute.objects.create(label="nightly")

    client_as_operator.post(f"/alerts/mutes/{mute.pk}/delete/")

    assert not AlertMute.objects.exists()


@pytest.mark.django_db
def test_resending_an_alert_id_past_64_bits_is_a_404(client_as_operator):
    response = client_as_operator.post(f"/alerts/{HUGE_INT}/resend/")

    assert response.status_code == 404


@pytest.mark.django_db
def test_the_alert_settings_page_refuses_a_post_of_hostile_mute_fields(client_as_operator):
    for value in HOSTILE_VALUES:
        response = client_as_operator.post("/alerts/mutes/", {"scan": value, "label": value})
        assert response.status_code == 400, value
    assert not AlertMute.objects.exists()


ADMIN_LISTS = ["scan", "refreshrun", "alert", "alertmute", "alertsnooze", "alertsubscription"]
ADMIN_QUERIES = [
    "status=%00",
    "q=%00",
    "q=a%00b",
    "tracking_id__exact=%00",
    "data_source=%00",
    "archived_at__isnull=%00",
    f"id__exact={HUGE_INT}",
    f"p={HUGE_INT}",
    "o=%00",
    "outcome=%00",
    "kind=%00",
    "state=%00",
    "created_at__gte=%00",
    "created_at__year=99999999",
]


@pytest.mark.django_db
@pytest.mark.parametrize("model", ADMIN_LISTS)
def test_admin_lists_never_answer_500_to_hostile_filters(superuser_client, model):
    make_scan("admin-hostile")
    failures = []
    for query in ADMIN_QUERIES:
        response = superuser_client.get(f"/admin/scans/{model}/?{query}")
        if response.status_code >= 500:
            failures.append((query, response.status_code))
    assert failures == []


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["scan", "alert", "alertmute"])
@pytest.mark.parametrize("object_id", ["%00", HUGE_INT, "x" * 2000])
def test_admin_change_pages_never_answer_500_to_hostile_ids(superuser_client, model, object_id):
    response = superuser_client.get(f"/admin/scans/{model}/{object_id}/change/")

    assert response.status_code < 500


def test_the_sweep_covers_every_named_url_of_the_app():
    # A new URL is swept automatically: this pins that the sweep reads the app's own list.
    assert {pattern.name for pattern in _every_pattern()} >= {"alert-resend", "alert-mute-delete", "detail"}
