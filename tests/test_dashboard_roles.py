"""Who may do what: anonymous users are sent to log in, viewers read, operators act, superusers get the admin;
every POST needs its CSRF token, sent the way htmx sends it."""

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from scans.models import AlertMute, Scan
from tests.factories import make_refresh_run, make_scan
from tests.helpers import page_text, parse_html

pytestmark = pytest.mark.django_db

SCAN_ID = "47882682-9f38-4f45-afec-daadaa1b230b"
PAGES = ["/", "/header/", "/?status=FAILED&q=4788", "/add/", f"/scans/{SCAN_ID}/"]
ACTIONS = ["refresh", "archive", "restore", "label", "mute", "unmute"]
POSTS = [
    ("/add/", {"ids": "new-scan-1"}),
    *[(f"/bulk/{action}/", {"ids": [SCAN_ID], "label": "changed"}) for action in [*ACTIONS[:4], "clear-label"]],
    ("/bulk/archive/", {"scope": "matching", "query": ""}),
    ("/bulk/archive/undo/", {"archived_at": "2025-01-01T00:00:00+00:00"}),
    *[(f"/scans/{SCAN_ID}/{action}/", {"label": "changed"}) for action in ACTIONS],
]


@pytest.fixture
def scan() -> Scan:
    return make_scan(SCAN_ID, status=Scan.Status.PENDING, label="original")


def state() -> list[tuple]:
    """Everything an action could change, to prove a refused one changed nothing."""
    scans = Scan.objects.order_by("pk").values_list("tracking_id", "label", "archived_at", "poll__next_check_at")
    return [*scans, *AlertMute.objects.values_list("scan_id", "label")]


# --- Anonymous ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", PAGES)
def test_an_anonymous_visitor_is_sent_to_log_in_from_every_page(client, scan, url):
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize(("url", "data"), POSTS)
def test_an_anonymous_post_changes_nothing(client, scan, url, data):
    before = state()

    response = client.post(url, data)

    assert response.status_code in (302, 403)
    if response.status_code == 302:
        assert response["Location"].startswith("/login/")
    assert state() == before


# --- Viewer ------------------------------------------------------------------------------------------------


def test_a_viewer_reads_the_list_and_the_scan_page(viewer_client, scan):
    assert SCAN_ID in viewer_client.get("/").content.decode()
    assert viewer_client.get("/", HTTP_HX_REQUEST="true").status_code == 200
    assert viewer_client.get("/header/").status_code == 200
    assert SCAN_ID in viewer_client.get(f"/scans/{SCAN_ID}/").content.decode()


def test_a_viewer_may_not_open_the_add_page(viewer_client):
    assert viewer_client.get("/add/").status_code == 403


@pytest.mark.parametrize(("url", "data"), POSTS)
def test_a_viewer_is_refused_every_change(viewer_client, scan, url, data):
    before = state()

    assert viewer_client.post(url, data).status_code == 403
    assert state() == before


def test_a_viewer_sees_no_controls_for_changes(viewer_client, scan):
    response = viewer_client.get("/")
    listing = parse_html(response)
    detail = parse_html(viewer_client.get(f"/scans/{SCAN_ID}/"))

    assert listing.select("input.row-select, [data-select-all], #bulk-form") == []
    assert "/bulk/" not in response.content.decode()
    assert listing.select('a[href="/add/"]') == []
    assert detail.select('form[action^="/scans/"]') == []
    assert listing.select_one(".who .role").get_text() == "viewer"


def test_a_viewer_is_not_invited_to_add_scans_to_an_empty_list(viewer_client):
    text = page_text(viewer_client.get("/"))

    assert "No scans tracked yet." in text
    assert "Add tracking IDs" not in text


def test_a_viewer_refused_an_operator_page_is_told_why_and_led_back(viewer_client):
    response = viewer_client.get("/add/")
    page = parse_html(response)

    assert response.status_code == 403
    assert page.h1.get_text() == "Not allowed"
    assert page.select_one('main a[href="/"]').get_text() == "Back to the scans"
    assert page.select_one(".who .role").get_text() == "viewer"


# --- An account in no group ----------------------------------------------------------------------------------

NO_ACCESS = "Your account has no access yet: ask an administrator to add you to Viewers or Operators"


@pytest.fixture
def no_group_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("nora", password="pw-nora-1"))
    return client


@pytest.mark.parametrize("url", [*PAGES, "/alerts/", "/alerts/settings/"])
def test_a_user_with_no_group_gets_one_clear_page_everywhere(no_group_client, scan, url):
    response = no_group_client.get(url)
    page = parse_html(response)

    assert response.status_code == 403
    assert NO_ACCESS in page_text(response)
    assert page.select_one(".who").get_text(strip=True) == "nora"  # who is signed in, and no role badge
    assert page.select(".role") == []
    # No link anywhere that would only lead back to this page; one way on: Log out.
    assert [link["href"] for link in page.select("header a, main a")] == ["/"]  # the brand
    logout = page.select('form[action="/logout/"] button')
    assert [button.get_text() for button in logout] == ["Log out"]
    assert SCAN_ID not in page_text(response)


@pytest.mark.parametrize(("url", "data"), POSTS)
def test_a_user_with_no_group_changes_nothing(no_group_client, scan, url, data):
    before = state()

    response = no_group_client.post(url, data)

    assert response.status_code == 403
    assert NO_ACCESS in page_text(response)
    assert state() == before


def test_the_no_access_page_logs_out(no_group_client):
    response = no_group_client.post("/logout/", follow=True)

    assert response.redirect_chain[-1][0] == "/login/"
    assert "_auth_user_id" not in no_group_client.session


# --- Operator ----------------------------------------------------------------------------------------------


def test_an_operator_sees_the_controls(operator_client, scan):
    listing = parse_html(operator_client.get("/"))
    detail = parse_html(operator_client.get(f"/scans/{SCAN_ID}/"))

    assert listing.select_one(f'input.row-select[name="ids"][value="{SCAN_ID}"][form="bulk-form"]') is not None
    assert listing.select_one("form#bulk-form") is not None and listing.select_one('a[href="/add/"]') is not None
    assert detail.select_one(f'form[method="post"][action="/scans/{SCAN_ID}/archive/"]') is not None
    assert operator_client.get("/add/").status_code == 200
    assert listing.select(".who .role") == []  # an operator carries no badge


@pytest.mark.parametrize(
    ("action", "changed"),
    [
        ("refresh", lambda scan: scan.poll.next_check_at <= timezone.now()),
        ("archive", lambda scan: scan.archived_at is not None and scan.poll.next_check_at is None),
        ("label", lambda scan: scan.label == "changed"),
    ],
)
def test_an_operator_acts_on_one_scan(operator_client, action, changed, django_capture_on_commit_callbacks):
    make_scan(SCAN_ID, status=Scan.Status.PENDING, next_check_at=timezone.now() + timedelta(hours=1))

    with django_capture_on_commit_callbacks():  # a queued refresh is not sent anywhere
        response = operator_client.post(f"/scans/{SCAN_ID}/{action}/", {"label": "changed"})

    assert response.status_code == 302
    assert changed(Scan.objects.get())


def test_an_operator_restores_a_scan(operator_client):
    make_scan(SCAN_ID, status=Scan.Status.PENDING, archived_at=timezone.now(), next_check_at=None)

    assert operator_client.post(f"/scans/{SCAN_ID}/restore/").status_code == 302
    assert Scan.objects.get().archived_at is None


@pytest.fixture
def three_scans():
    for tracking_id in ("bulk-a", "bulk-b", "bulk-c"):
        make_scan(tracking_id, status=Scan.Status.PENDING, label="old")


def test_bulk_archive_changes_only_the_selected_scans(operator_client, three_scans):
    response = operator_client.post(
        "/bulk/archive/", {"ids": ["bulk-a", "bulk-c"], "next": "/?q=bulk"}, follow=True
    )

    assert response.redirect_chain[0][0] == "/?q=bulk"
    assert set(Scan.objects.filter(archived_at__isnull=False).values_list("tracking_id", flat=True)) == {
        "bulk-a",
        "bulk-c",
    }
    assert "Archived 2 scan(s): they are no longer polled." in page_text(response)


def test_bulk_label_restore_and_refresh(operator_client, three_scans, django_capture_on_commit_callbacks):
    operator_client.post("/bulk/label/", {"ids": ["bulk-a", "bulk-b"], "label": "audit"})
    operator_client.post("/bulk/archive/", {"ids": ["bulk-a"]})
    operator_client.post("/bulk/restore/", {"ids": ["bulk-a", "bulk-b"]})
    with django_capture_on_commit_callbacks() as callbacks:
        response = operator_client.post("/bulk/refresh/", {"ids": ["bulk-c"]}, follow=True)

    assert dict(Scan.objects.values_list("tracking_id", "label")) == {
        "bulk-a": "audit",
        "bulk-b": "audit",
        "bulk-c": "old",
    }
    assert not Scan.objects.filter(archived_at__isnull=False).exists()
    assert len(callbacks) == 1
    assert "Refresh requested for 1 scan(s)." in page_text(response)


@pytest.mark.parametrize(
    ("url", "data", "message"),
    [
        ("/bulk/archive/", {}, "Select at least one scan first."),
        ("/bulk/archive/", {"ids": ["", "  "]}, "Select at least one scan first."),
        ("/bulk/archive/", {"ids": ["bulk-a", "bulk-\x00a"]}, "'bulk-\\x00a' is not a tracking ID: it contains"),
        ("/bulk/archive/", {"ids": ["bulk-a", "x" * 129]}, "the limit is 128"),
        ("/bulk/archive/", {"ids": ["bulk-a", "not-tracked"]}, "No tracked scan has the ID not-tracked."),
        ("/bulk/refresh/", {"ids": [f"id-{n}" for n in range(501)]}, "At most 500 scans at once"),
        ("/bulk/label/", {"ids": ["bulk-a"], "label": "z" * 201}, "at most 200 characters"),
    ],
)
def test_a_bad_bulk_request_changes_nothing_and_says_why(operator_client, three_scans, url, data, message):
    before = state()

    response = operator_client.post(url, data, follow=True)

    assert response.status_code == 200
    assert message in page_text(response)
    assert state() == before


def test_a_bulk_action_that_changes_nothing_says_so(operator_client, three_scans):
    response = operator_client.post("/bulk/restore/", {"ids": ["bulk-a"]}, follow=True)

    assert "None of the selected scans changed." in page_text(response)


def test_a_get_to_an_action_is_not_allowed(operator_client, scan):
    assert operator_client.get(f"/scans/{SCAN_ID}/archive/").status_code == 405
    assert operator_client.get("/bulk/archive/").status_code == 405
    assert operator_client.get(f"/scans/{SCAN_ID}/mute/").status_code == 405
    assert Scan.objects.get().archived_at is None


# --- Superuser and the admin -------------------------------------------------------------------------------


def test_the_admin_lists_and_searches_scans(admin_client):
    make_scan(SCAN_ID, label="nightly CRM")
    make_scan("other-scan", label="weekly")

    listing = admin_client.get("/admin/scans/scan/")
    by_id = admin_client.get("/admin/scans/scan/?q=afec")
    by_label = admin_client.get("/admin/scans/scan/?q=WEEKLY")

    assert listing.status_code == 200 and listing.context["cl"].result_count == 2
    assert [scan.tracking_id for scan in by_id.context["cl"].result_list] == [SCAN_ID]
    assert [scan.tracking_id for scan in by_label.context["cl"].result_list] == ["other-scan"]


def test_the_admin_opens_a_scan_and_a_refresh_run(admin_client):
    scan = make_scan(SCAN_ID, status=Scan.Status.FAILED, last_raw_answer={"status": "FAILED"})
    run = make_refresh_run(ids_asked=4)

    assert admin_client.get(f"/admin/scans/scan/{scan.pk}/change/").status_code == 200
    assert admin_client.get("/admin/scans/refreshrun/").status_code == 200
    assert admin_client.get(f"/admin/scans/refreshrun/{run.pk}/change/").status_code == 200
    assert admin_client.get("/admin/scans/refreshrun/?outcome__exact=ok").context["cl"].result_count == 1
    assert admin_client.get("/admin/scans/refreshrun/add/").status_code == 403  # runs are the poller's own record


def test_a_superuser_gets_the_dashboard_with_every_control_and_an_admin_link(admin_client, scan):
    page = parse_html(admin_client.get("/"))

    assert page.select_one('a[href="/admin/"]') is not None and page.select_one("form#bulk-form") is not None


def test_an_operator_is_not_let_into_the_admin(operator_client):
    response = operator_client.get("/admin/scans/scan/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


# --- CSRF --------------------------------------------------------------------------------------------------


@pytest.fixture
def strict_client(operator) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    return client


def _htmx_token(client: Client, url: str) -> str:
    """The token base.html puts in `hx-headers` on <body>, which htmx sends on every request."""
    headers = parse_html(client.get(url)).body["hx-headers"]
    return json.loads(headers)["X-CSRFToken"]


@pytest.mark.parametrize(("url", "data"), POSTS)
def test_a_post_without_the_csrf_token_is_refused(strict_client, scan, url, data):
    before = state()

    assert strict_client.post(url, data).status_code == 403
    assert state() == before


def test_a_post_with_the_token_in_the_htmx_header_goes_through(strict_client, scan):
    token = _htmx_token(strict_client, f"/scans/{SCAN_ID}/")

    response = strict_client.post(
        f"/scans/{SCAN_ID}/label/", {"label": "via htmx"}, HTTP_X_CSRFTOKEN=token, HTTP_HX_REQUEST="true"
    )

    assert response.status_code == 302
    assert Scan.objects.get().label == "via htmx"


def test_a_form_post_with_the_token_in_the_form_goes_through(strict_client, scan):
    form = parse_html(strict_client.get("/add/")).select_one("form.add-form")
    token = form.select_one('input[name="csrfmiddlewaretoken"]')["value"]

    response = strict_client.post("/add/", {"ids": "csrf-ok-1", "csrfmiddlewaretoken": token})

    assert response.status_code == 200
    assert Scan.objects.filter(tracking_id="csrf-ok-1").exists()


def test_a_forged_token_is_refused(strict_client, scan):
    strict_client.get("/")  # the browser has a real cookie; the attacker's page cannot read it

    response = strict_client.post(f"/scans/{SCAN_ID}/archive/", HTTP_X_CSRFTOKEN="x" * 64)

    assert response.status_code == 403
    assert Scan.objects.get().archived_at is None
