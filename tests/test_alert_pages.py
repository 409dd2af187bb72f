"""The alert pages: the Alerts outbox with its filters and resend, a scan's alert history and mute switch, and the
settings page (subscription, mutes, snooze); plus what an error's HTML becomes in the mail."""

import html
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from scans.alerts import alert_recipients, alerts_detect, alerts_mute, alerts_send_due, alerts_snooze
from scans.models import Alert, AlertMute, AlertSnooze, AlertSubscription, Scan
from tests.factories import make_scan
from tests.helpers import listed_ids, page_text, parse_html

pytestmark = pytest.mark.django_db

OPS = ["ops@example.com"]


def failed_scan(tracking_id: str, **fields) -> Scan:
    now = timezone.now()
    fields = {"error_message": "Permission denied", "ended_at": now, "last_changed_at": now, **fields}
    return make_scan(tracking_id, status=Scan.Status.FAILED, **fields)


def stuck_scan(tracking_id: str) -> Scan:
    return make_scan(tracking_id, status=Scan.Status.PENDING, submitted_at=timezone.now() - timedelta(hours=2))


def alert_for(tracking_id: str, kind: str = Alert.Kind.FAILED) -> Alert:
    return Alert.objects.get(scan__tracking_id=tracking_id, kind=kind)


@pytest.fixture
def outbox(settings, smtp_server):
    """One alert in each state the page shows, each got there the real way (detection and a real SMTP server)."""
    settings.ALERT_EMAILS = OPS
    failed_scan("sent-scan", label="crm")
    alerts_detect()
    alerts_send_due()
    failed_scan("failing-scan", label="crm")
    smtp_server.refuse = True
    alerts_detect()
    alerts_send_due()
    smtp_server.refuse = False
    alerts_mute(scan=failed_scan("muted-scan"))
    stuck_scan("waiting-scan")
    alerts_detect()
    assert len(smtp_server.messages) == 1
    return smtp_server


def alerts_page(client, query: str = ""):
    response = client.get(f"/alerts/{query}")
    assert response.status_code == 200
    return response


# --- The Alerts page ------------------------------------------------------------------------------------------


def test_the_alerts_page_shows_sent_waiting_failing_and_suppressed_alerts(viewer_client, outbox):
    response = alerts_page(viewer_client)
    text = page_text(response)

    assert sorted(listed_ids(response)) == ["failing-scan", "muted-scan", "sent-scan", "waiting-scan"]
    for shown in (
        "[FAILED] crm — Permission denied",
        "[STUCK] waiting-scan — pending",
        "Sent",
        "Waiting",
        "Failing to send",
        "421",
    ):
        assert shown in text
    assert "Suppressed" in text and "scan muted" in text
    assert "Resend now" not in text  # a viewer cannot resend


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?kind=stuck", ["waiting-scan"]),
        ("?kind=failed", ["failing-scan", "muted-scan", "sent-scan"]),
        ("?state=sent", ["sent-scan"]),
        ("?state=failing", ["failing-scan"]),
        ("?state=pending", ["failing-scan", "waiting-scan"]),
        ("?state=suppressed", ["muted-scan"]),
        ("?q=failing-sc", ["failing-scan"]),
        ("?kind=failed&state=pending&q=crm", ["failing-scan"]),
        ("?kind=nonsense&state=nonsense", ["failing-scan", "muted-scan", "sent-scan", "waiting-scan"]),
    ],
)
def test_the_alerts_page_filters_by_kind_state_and_scan(viewer_client, outbox, query, expected):
    assert sorted(listed_ids(alerts_page(viewer_client, query))) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?kind=exploded", "Unknown kind 'exploded' ignored."),
        ("?state=lost", "Unknown state 'lost' ignored."),
        ("?q=%00", "Scan contains a NUL character; ignored."),
        ("?q=" + "x" * 300, "Scan is longer than 200 characters; ignored."),
    ],
)
def test_a_bad_alert_filter_is_reported_and_the_outbox_still_shown(viewer_client, outbox, query, message):
    response = viewer_client.get(f"/alerts/{query}")

    assert response.status_code == 200
    assert message in page_text(response)
    assert len(parse_html(response).select("table.scans tbody tr")) == Alert.objects.count()


def test_a_filter_that_matches_nothing_says_so(viewer_client, outbox):
    assert "No alerts match these filters." in page_text(alerts_page(viewer_client, "?q=no-such-scan"))


def test_an_operator_resends_a_failing_alert_and_it_is_delivered_at_the_next_send(
    operator_client, outbox, django_capture_on_commit_callbacks
):
    alert = alert_for("failing-scan")
    assert alert.next_attempt_at > timezone.now()  # backing off after the failed send
    page = alerts_page(operator_client, "?state=failing")
    assert f'action="/alerts/{alert.pk}/resend/"' in page.content.decode()

    with django_capture_on_commit_callbacks() as queued:
        response = operator_client.post(f"/alerts/{alert.pk}/resend/", {"next": "/alerts/?state=failing"})

    assert response.status_code == 302
    assert response["Location"] == "/alerts/?state=failing"
    assert len(queued) == 1  # a worker is asked to send now
    assert "will be sent again now" in page_text(operator_client.get(response["Location"]))
    alerts_send_due()
    alert.refresh_from_db()
    assert (alert.state, alert.attempts, alert.last_error) == ("sent", 2, "")
    resent = [
        message for message in outbox.messages if message["Message-ID"].startswith(f"<scan-alert-{alert.pk}@")
    ]
    assert [message["Subject"] for message in resent] == ["[FAILED] crm — Permission denied"]


def test_resending_an_alert_already_sent_does_nothing(operator_client, outbox):
    alert = alert_for("sent-scan")

    response = operator_client.post(f"/alerts/{alert.pk}/resend/", follow=True)

    assert "Only an alert that is still waiting to be sent can be resent." in page_text(response)
    assert Alert.objects.get(pk=alert.pk).sent_at == alert.sent_at


def test_a_viewer_cannot_resend(viewer_client, outbox):
    alert = alert_for("failing-scan")

    response = viewer_client.post(f"/alerts/{alert.pk}/resend/")

    assert response.status_code == 403
    assert Alert.objects.get(pk=alert.pk).next_attempt_at == alert.next_attempt_at


def test_resend_needs_a_login_and_a_post(client, operator_client, outbox):
    alert = alert_for("failing-scan")

    assert operator_client.get(f"/alerts/{alert.pk}/resend/").status_code == 405
    operator_client.logout()
    response = client.post(f"/alerts/{alert.pk}/resend/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_the_alerts_page_shows_an_active_snooze(viewer_client, settings):
    alerts_snooze(until=timezone.now() + timedelta(hours=1), reason="Protecto maintenance")

    banner = parse_html(alerts_page(viewer_client)).select_one('[data-maintenance="active"]')

    assert banner is not None
    assert "Alerts snoozed until" in banner.get_text()
    assert banner.get_text().strip().endswith(": Protecto maintenance")


# --- A scan's page --------------------------------------------------------------------------------------------


def test_the_scan_page_shows_its_alert_history(viewer_client, settings, smtp_server):
    settings.ALERT_EMAILS = OPS
    scan = make_scan(
        "history-scan", status=Scan.Status.IN_PROGRESS, started_at=timezone.now() - timedelta(hours=3)
    )
    alerts_detect()
    alerts_send_due()
    scan.status, scan.ended_at, scan.error_message = Scan.Status.FAILED, timezone.now(), "Out of memory"
    scan.last_changed_at = scan.ended_at
    scan.save()
    alerts_mute(scan=scan)
    alerts_detect()

    text = page_text(viewer_client.get("/scans/history-scan/"))

    history = text[text.index("Alerts about this scan") :]
    assert "Alerts about this scan are muted." in history
    for shown in ("Scan stuck", "Sent", "ops@example.com", "Scan failed", "Suppressed (scan muted)"):
        assert shown in history
    assert "Unmute alerts" not in text  # the button is for operators


def test_a_scan_without_alerts_says_so(viewer_client):
    make_scan("quiet-scan", status=Scan.Status.SUCCESS)

    assert "No alerts about this scan." in page_text(viewer_client.get("/scans/quiet-scan/"))


def test_an_operator_mutes_and_unmutes_a_scan_from_its_page(operator_client):
    scan = make_scan("noisy-scan", status=Scan.Status.PENDING)
    assert "Mute alerts" in page_text(operator_client.get("/scans/noisy-scan/"))

    response = operator_client.post("/scans/noisy-scan/mute/", follow=True)

    assert AlertMute.objects.filter(scan=scan).count() == 1
    text = page_text(response)
    assert "Alerts about this scan are muted." in text
    assert "Unmute alerts" in text
    operator_client.post("/scans/noisy-scan/mute/")  # twice is still one mute
    assert AlertMute.objects.filter(scan=scan).count() == 1

    response = operator_client.post("/scans/noisy-scan/unmute/", follow=True)

    assert not AlertMute.objects.exists()
    assert "Alerts about this scan are back on." in page_text(response)


def test_a_viewer_cannot_mute_a_scan(viewer_client):
    make_scan("noisy-scan")

    assert viewer_client.post("/scans/noisy-scan/mute/").status_code == 403
    assert not AlertMute.objects.exists()


# --- The settings page ------------------------------------------------------------------------------------------


SETTINGS = "/alerts/settings/"
SUBSCRIPTION = "/alerts/settings/subscription/"
MUTES = "/alerts/mutes/"
SNOOZE = "/alerts/snooze/"


def snooze_end_url(snooze_id: int) -> str:
    return f"/alerts/snooze/{snooze_id}/end/"


def unmute_url(mute: AlertMute) -> str:
    return f"/alerts/mutes/{mute.pk}/delete/"


def form_actions(response) -> set[str]:
    """Where the POST forms of the page's content (not its header's Log out) send their data."""
    return {form["action"] for form in parse_html(response).select('main form[method="post"]')}


def in_an_hour() -> str:
    return (timezone.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")


def test_a_viewer_saves_a_subscription_and_then_receives_those_kinds(viewer_client, viewer, settings):
    settings.ALERT_EMAILS = OPS
    page = viewer_client.get(SETTINGS)
    assert "My alerts" in page_text(page)
    assert form_actions(page) == {SUBSCRIPTION}  # the mute and snooze forms are for operators

    response = viewer_client.post(
        SUBSCRIPTION, {"kinds": ["failed", "api_down"], "email": "victor.pager@example.com"}, follow=True
    )

    assert response.redirect_chain == [(SETTINGS, 302)]
    assert "Your alert subscription is saved." in page_text(response)
    subscription = AlertSubscription.objects.get(user=viewer)
    assert (subscription.kinds, subscription.address) == (["failed", "api_down"], "victor.pager@example.com")
    assert alert_recipients(kind="failed") == ["ops@example.com", "victor.pager@example.com"]
    assert alert_recipients(kind="stuck") == ["ops@example.com"]
    assert response.context["form"].initial["kinds"] == ["failed", "api_down"]
    checked = parse_html(response).select('input[type="checkbox"][name="kinds"][checked]')
    assert [box["value"] for box in checked] == ["failed", "api_down"]


def test_a_viewer_can_subscribe_to_unknown_scans_and_a_stopped_or_resumed_refresh(viewer_client, viewer):
    page = parse_html(viewer_client.get(SETTINGS))
    offered = {box["value"] for box in page.select('input[type="checkbox"][name="kinds"]')}
    assert {"not_found", "poller_stale", "poller_recovered"} <= offered

    viewer_client.post(SUBSCRIPTION, {"kinds": ["not_found", "poller_stale", "poller_recovered"]})

    assert AlertSubscription.objects.get(user=viewer).kinds == ["not_found", "poller_stale", "poller_recovered"]


def test_a_subscription_with_a_bad_address_is_refused_and_the_other_forms_stay_empty(operator_client):
    response = operator_client.post(SUBSCRIPTION, {"kinds": ["failed"], "email": "nope"})

    assert response.status_code == 400
    assert "Enter a valid email address." in page_text(response)
    assert response.context["form"].is_bound
    assert not response.context["mute_form"].is_bound and not response.context["snooze_form"].is_bound
    assert not AlertSubscription.objects.exists()


def test_an_operator_mutes_a_scan_by_id_and_a_label(operator_client, operator):
    scan = make_scan("47882682-9f38-4f45-afec-daadaa1b230b")

    by_id = operator_client.post(MUTES, {"scan": f"  {scan.tracking_id} "}, follow=True)
    by_label = operator_client.post(MUTES, {"label": "noisy tenant"}, follow=True)

    assert by_id.redirect_chain == [(SETTINGS, 302)]
    assert "Muted." in page_text(by_id)
    text = page_text(by_label)
    assert f'scan <a class="mono" href="/scans/{scan.tracking_id}/">{scan.tracking_id}</a>' in text
    assert "label “noisy tenant”" in text
    assert set(AlertMute.objects.values_list("scan__tracking_id", "label", "created_by")) == {
        (scan.tracking_id, "", operator.pk),
        (None, "noisy tenant", operator.pk),
    }


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"scan": "no-such-scan"}, "No tracked scan has the ID no-such-scan."),
        ({}, "Give either a tracking ID or a label to mute."),
        ({"scan": "some-scan", "label": "crm"}, "Give either a tracking ID or a label to mute."),
        ({"label": "x" * 201}, "Ensure this value has at most 200 characters (it has 201)."),
        # PostgreSQL refuses NUL in a query parameter: the field must reject it before any query (else a 500).
        ({"scan": "some-scan\x00"}, "is not a tracking ID: it contains '\\x00'"),
        ({"scan": "a" * 129}, "is not a tracking ID: it is 129 characters long; the limit is 128"),
        ({"scan": "some scan/../x"}, "is not a tracking ID: it contains"),
    ],
    ids=["unknown-id", "neither", "both", "label-too-long", "nul", "too-long-id", "bad-characters"],
)
def test_a_bad_mute_is_refused_with_a_clear_error(operator_client, data, error):
    make_scan("some-scan")

    response = operator_client.post(MUTES, data)

    assert response.status_code == 400
    assert error in page_text(response)
    assert response.context["mute_form"].is_bound and not response.context["snooze_form"].is_bound
    assert not AlertMute.objects.exists()


def test_an_operator_removes_a_mute(operator_client):
    mute = alerts_mute(label="crm")
    assert form_actions(operator_client.get(SETTINGS)) == {SUBSCRIPTION, MUTES, SNOOZE, unmute_url(mute)}

    response = operator_client.post(unmute_url(mute), follow=True)

    assert "Mute removed." in page_text(response)
    assert "Nothing is muted." in page_text(response)
    again = operator_client.post(unmute_url(mute), follow=True)
    assert "That mute had already been removed." in page_text(again)


def test_an_operator_snoozes_all_alerts_for_a_custom_time_and_ends_the_snooze(operator_client, now):
    until = (now + timedelta(hours=2)).replace(second=0)

    response = operator_client.post(
        SNOOZE,
        {"preset": "custom", "until": until.strftime("%Y-%m-%dT%H:%M"), "reason": "DB upgrade"},
        follow=True,
    )

    text = page_text(response)
    assert f"All alerts are snoozed until {until:%Y-%m-%d %H:%M} UTC." in text
    snooze = AlertSnooze.objects.get()
    assert (snooze.starts_at, snooze.until, snooze.reason) == (now, until, "DB upgrade")
    assert snooze_end_url(snooze.pk) in form_actions(response)

    response = operator_client.post(snooze_end_url(snooze.pk), follow=True)

    assert "Snooze ended: alerts are on again." in page_text(response)
    assert "Alerts are on." in page_text(response)
    assert AlertSnooze.objects.get().ended_at == now
    again = operator_client.post(snooze_end_url(snooze.pk), follow=True)
    assert "That snooze had already ended." in page_text(again)


def test_a_snooze_ending_in_the_past_is_refused(operator_client):
    past = timezone.now() - timedelta(minutes=5)

    response = operator_client.post(SNOOZE, {"preset": "custom", "until": past.strftime("%Y-%m-%dT%H:%M")})

    assert response.status_code == 400
    assert "The end of the snooze must be in the future." in page_text(response)
    assert response.context["snooze_form"].is_bound and not response.context["mute_form"].is_bound
    assert not AlertSnooze.objects.exists()


OPERATE_POSTS = ["mute", "unmute", "snooze", "end-snooze"]


def settings_post(client, what: str, mute: AlertMute, snooze: AlertSnooze | None = None):
    """One settings operation with valid input: `what` is "subscription" or one of OPERATE_POSTS."""
    if what == "subscription":
        return client.post(SUBSCRIPTION, {"kinds": ["failed"]})
    if what == "mute":
        return client.post(MUTES, {"label": "other"})
    if what == "unmute":
        return client.post(unmute_url(mute))
    if what == "snooze":
        return client.post(SNOOZE, {"preset": "1h"})
    return client.post(snooze_end_url(snooze.pk if snooze else 1))


@pytest.mark.parametrize("what", OPERATE_POSTS)
def test_a_viewer_cannot_mute_or_snooze(viewer_client, what):
    mute = alerts_mute(label="crm")
    snooze = alerts_snooze(until=timezone.now() + timedelta(hours=1))

    response = settings_post(viewer_client, what, mute, snooze)

    assert response.status_code == 403
    assert list(AlertMute.objects.all()) == [mute]
    assert list(AlertSnooze.objects.values_list("pk", "ended_at")) == [(snooze.pk, None)]


@pytest.mark.parametrize("what", [*OPERATE_POSTS, "subscription"])
def test_every_settings_operation_needs_a_login(client, what):
    mute = alerts_mute(label="crm")

    response = settings_post(client, what, mute)

    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    assert list(AlertMute.objects.all()) == [mute]
    assert not AlertSnooze.objects.exists() and not AlertSubscription.objects.exists()


@pytest.mark.parametrize(
    "url", [SUBSCRIPTION, MUTES, "/alerts/mutes/1/delete/", SNOOZE, snooze_end_url(1)], ids=lambda url: url
)
def test_every_settings_operation_answers_only_a_post(operator_client, url):
    assert operator_client.get(url).status_code == 405


def test_the_settings_page_needs_a_login_and_is_not_a_form_target(client, operator_client):
    assert operator_client.post(SETTINGS, {"form": "snooze", "until": in_an_hour()}).status_code == 405
    assert not AlertSnooze.objects.exists()
    operator_client.logout()

    response = client.get(SETTINGS)

    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


# --- The mail itself --------------------------------------------------------------------------------------------


def test_html_in_an_error_is_escaped_in_the_html_mail_and_kept_in_the_text(settings):
    settings.ALERT_EMAILS = OPS
    error = 'Bad row <script>alert("x")</script> & <b>bold</b>'
    failed_scan("html-scan", error_message=error, label="<i>crm</i>")

    alerts_detect()
    alerts_send_due()

    [message] = mail.outbox
    body_html = message.alternatives[0][0]
    assert "<script>" not in body_html and "<b>bold" not in body_html and "<i>crm" not in body_html
    assert "Bad row &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in body_html
    assert error in message.body  # the plain text shows the error exactly as the API sent it
    assert message.subject == '[FAILED] <i>crm</i> — Bad row <script>alert("x")</script> & <b>bold</b>'


def test_a_label_cannot_inject_mail_headers(settings):
    settings.ALERT_EMAILS = OPS
    failed_scan("header-scan", label="crm\r\nBcc: attacker@example.com")

    alerts_detect()
    alerts_send_due()

    [message] = mail.outbox
    assert message.subject == "[FAILED] crm Bcc: attacker@example.com — Permission denied"
    assert message.recipients() == OPS


def test_the_alerts_page_escapes_what_it_shows(viewer_client, settings):
    settings.ALERT_EMAILS = OPS
    failed_scan("escape-scan", label="<img src=x onerror=alert(1)>")
    alerts_detect()

    body = alerts_page(viewer_client).content.decode()

    assert "<img src=x" not in body
    assert html.escape("[FAILED] <img src=x onerror=alert(1)> — Permission denied", quote=False) in body


def test_superusers_can_browse_and_search_the_outbox_in_the_admin(admin_client):
    Alert.objects.create(
        kind=Alert.Kind.API_DOWN,
        subject="[Protecto API DOWN] 3 cycles",
        body_text="x",
        body_html="x",
    )

    listing = admin_client.get("/admin/scans/alert/?q=API+DOWN&state__exact=pending")

    assert listing.status_code == 200
    assert "[Protecto API DOWN] 3 cycles" in listing.content.decode()
    assert admin_client.get("/admin/scans/alert/add/").status_code == 403
