"""Alerts end to end: refreshes against the simulator over real HTTP, detection into the outbox, and delivery to a
real SMTP server (aiosmtpd), with the clock moved by time_machine."""

import io
import threading
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.apps.registry import Apps
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from scans import alert_detection
from scans.alerts import (
    alerts_detect,
    alerts_end_snooze,
    alerts_mute,
    alerts_run,
    alerts_send_due,
    alerts_snooze,
    alerts_unmute,
)
from scans.models import Alert, AlertSnooze, AlertSubscription, RefreshRun, Scan
from scans.refresh import scans_refresh_due
from scans.services import scans_track
from tests.factories import make_scan

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
OPS = ["ops@example.com", "oncall@example.com"]
SITE = "https://scans.example.com"


class Clock:
    """The frozen time every part of the test sees: Django, the simulator's API timestamps and the mail."""

    def __init__(self, time_machine) -> None:
        self._time_machine = time_machine

    def at(self, **delta) -> datetime:
        moment = T0 + timedelta(**delta)
        self._time_machine.move_to(moment, tick=False)
        return moment


@pytest.fixture
def clock(time_machine) -> Clock:
    clock = Clock(time_machine)
    clock.at()
    return clock


@pytest.fixture
def inbox(settings, smtp_server, protecto_settings, clock):
    """The SMTP server's inbox, with alerting configured for two ops addresses and the default thresholds."""
    settings.ALERT_EMAILS = OPS
    settings.SITE_URL = SITE
    settings.STUCK_PENDING_MINUTES = 30
    settings.STUCK_RUNNING_MINUTES = 120
    settings.ALERT_API_DOWN_AFTER = 3
    settings.ALERT_DIGEST_THRESHOLD = 10
    return smtp_server


def cycle():
    """What the beat does at the current (frozen) time: one refresh, then detect and send."""
    scans_refresh_due()
    return alerts_run()


def subscribe(username: str, *kinds: str, active: bool = True) -> User:
    user = User.objects.create_user(username=username, email=f"{username}@example.com", is_active=active)
    AlertSubscription.objects.create(user=user, kinds=list(kinds))
    return user


def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def html_of(message) -> str:
    return message.get_body(("html",)).get_content()


def subjects(inbox) -> list[str]:
    return [message["Subject"] for message in inbox.messages]


def heads(inbox) -> list[str]:
    """The subjects without their reasons: what each mail is about ("[FAILED] scan-a")."""
    return [subject.split(" — ")[0] for subject in subjects(inbox)]


# --- A failed scan ------------------------------------------------------------------------------------------


def test_a_scan_turning_failed_mails_its_error_and_link_once_to_the_right_people(inbox, simulator, clock):
    subscribe("alice", Alert.Kind.FAILED, Alert.Kind.STUCK)
    subscribe("bob", Alert.Kind.STUCK)
    subscribe("carol", Alert.Kind.FAILED, active=False)
    simulator.add_scan(
        "scan-crm-1",
        status="IN-PROGRESS",
        submitted_at=T0 - timedelta(minutes=10),
        started_at=T0 - timedelta(minutes=4),
    )
    scans_track(ids=["scan-crm-1"], label="nightly CRM")
    cycle()
    assert inbox.messages == []

    clock.at(minutes=1, seconds=30)
    simulator.set_status("scan-crm-1", "FAILED", error_msg="Permission denied reading CustomerDB/Customerstable")
    cycle()

    [message] = inbox.messages
    assert message["Subject"] == "[FAILED] nightly CRM — Permission denied reading CustomerDB/Customerstable"
    assert sorted(message.envelope_to) == sorted([*OPS, "alice@example.com"])
    assert message["X-Scan-Alert-Kind"] == "failed"
    text, html = text_of(message), html_of(message)
    for fact in (
        "Tracking ID: scan-crm-1",
        "Status:      FAILED",
        "Submitted:   2026-11-28 08:50:00 UTC",
        "Started:     2026-11-28 08:56:00 UTC",
        "Ended:       2026-11-28 09:01:30 UTC",
        "Queue wait:  6m 00s",
        "Run time:    5m 30s",
        "Permission denied reading CustomerDB/Customerstable",
        f"{SITE}/scans/scan-crm-1/",
    ):
        assert fact in text
    assert "Permission denied reading CustomerDB/Customerstable" in html
    assert f'<a href="{SITE}/scans/scan-crm-1/">' in html

    clock.at(minutes=2)
    cycle()
    clock.at(minutes=5)
    simulator.set_status("scan-crm-1", "FAILED", error_msg="Permission denied again")
    cycle()

    assert len(inbox.messages) == 1
    alert = Alert.objects.get()
    assert alert.kind == Alert.Kind.FAILED
    assert (alert.state, alert.attempts, alert.sent_at) == ("sent", 1, T0 + timedelta(minutes=1, seconds=30))


def test_a_scan_that_failed_long_before_it_was_tracked_is_not_news(inbox, simulator, clock):
    # Ops often paste old IDs to look at them: a failure that ended days ago must not page anyone now.
    simulator.add_scan(
        "old-failure",
        status="FAILED",
        submitted_at=T0 - timedelta(days=3),
        started_at=T0 - timedelta(days=3),
        ended_at=T0 - timedelta(days=3) + timedelta(minutes=5),
        error_msg="Quota exceeded",
    )
    simulator.add_scan("fresh-failure", status="FAILED", error_msg="Quota exceeded")
    scans_track(ids=["old-failure", "fresh-failure"])

    cycle()

    assert heads(inbox) == ["[FAILED] fresh-failure"]
    assert Scan.objects.get(tracking_id="old-failure").status == Scan.Status.FAILED


def test_a_long_many_line_error_makes_one_short_subject_line_with_its_first_line(inbox, clock):
    first = "Permission denied reading object CustomerDB/Customerstable/partition=2026-11-28/part-000" + "1" * 40
    error = f"{first}\r\nBcc: attacker@example.com\n\tat reader.py line 12\u2028Subject: spoofed\x07"
    make_scan("scan-long", status=Scan.Status.FAILED, label="HR share audit", error_message=error, ended_at=T0)

    alerts_run()

    [message] = inbox.messages
    subject = message["Subject"]
    assert subject.startswith("[FAILED] HR share audit — Permission denied reading object CustomerDB/")
    assert len(subject) == 100 and subject.endswith("…")
    assert "Bcc" not in subject and "\n" not in subject
    assert message.get_all("Subject") == [subject] and message.get_all("Bcc") is None
    assert sorted(message.envelope_to) == sorted(OPS)


def test_a_scan_without_a_label_is_named_by_its_tracking_id_and_a_bare_failure_has_no_dash(inbox, clock):
    make_scan("d3c1e2f0-5a6b-4c7d-8e9f-0a1b2c3d4e5f", status=Scan.Status.FAILED, ended_at=T0)

    alerts_run()

    assert subjects(inbox) == ["[FAILED] d3c1e2f0-5a6b-4c7d-8e9f-0a1b2c3d4e5f"]


def test_mail_times_are_utc_even_when_a_viewers_zone_is_active(inbox, clock):
    make_scan(
        "scan-tokyo",
        status=Scan.Status.FAILED,
        submitted_at=T0 - timedelta(minutes=20),
        started_at=T0 - timedelta(minutes=15),
        ended_at=T0 - timedelta(minutes=5),
        error_message="Quota exceeded",
    )

    # A detection run inside a request (a resend, a page that triggers work) must not write the viewer's clock.
    with timezone.override(ZoneInfo("Asia/Tokyo")):
        alerts_run()

    text = text_of(inbox.messages[0])
    assert "Ended:       2026-11-28 08:55:00 UTC" in text
    assert "17:55" not in text


def test_send_alerts_command_detects_sends_and_prints_what_it_sent(inbox, simulator):
    simulator.add_scan("scan-a", status="FAILED", error_msg="Quota exceeded for tenant")
    scans_track(ids=["scan-a"])
    scans_refresh_due()
    out = io.StringIO()

    call_command("send_alerts", stdout=out)

    assert "new alerts: 1 failed" in out.getvalue()
    assert f"sent     [FAILED] scan-a — Quota exceeded for tenant  ->  {', '.join(OPS)}" in out.getvalue()
    assert "1 sent, 0 failed" in out.getvalue()
    assert heads(inbox) == ["[FAILED] scan-a"]

    again = io.StringIO()
    call_command("send_alerts", stdout=again)

    assert "new alerts: none" in again.getvalue()
    assert "0 sent, 0 failed" in again.getvalue()
    assert len(inbox.messages) == 1


def test_without_any_recipient_the_alert_is_recorded_but_not_sent(inbox, simulator, settings):
    settings.ALERT_EMAILS = []
    simulator.add_scan("scan-a", status="FAILED")
    scans_track(ids=["scan-a"])

    cycle()

    assert inbox.messages == []
    assert Alert.objects.get().state == Alert.State.NO_RECIPIENTS


# --- Stuck scans ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "limit", "waited", "reason"),
    [
        (
            "PENDING",
            timedelta(minutes=30),
            "pending since it was submitted, 30\xa0minutes ago",
            "pending 30m 01s, limit 30m",
        ),
        ("IN-PROGRESS", timedelta(minutes=120), "in progress for 2\xa0hours", "running 2h 00m, limit 2h"),
    ],
    ids=["pending-30min", "running-120min"],
)
def test_a_scan_is_stuck_one_second_after_its_limit_by_the_apis_timestamps(
    inbox, simulator, clock, status, limit, waited, reason
):
    # Submitted (or started) at T0 by the API; tracking only begins a minute before the limit, so only the API's
    # own timestamp can tell how long the scan has been waiting.
    since = (
        {"submitted_at": T0}
        if status == "PENDING"
        else {"submitted_at": T0 - timedelta(minutes=3), "started_at": T0}
    )
    simulator.add_scan("slow-scan", status=status, **since)
    clock.at(seconds=(limit - timedelta(minutes=1)).total_seconds())
    scans_track(ids=["slow-scan"])
    cycle()

    clock.at(seconds=limit.total_seconds() - 1)
    cycle()
    assert inbox.messages == []

    clock.at(seconds=limit.total_seconds() + 1)
    cycle()
    assert subjects(inbox) == [f"[STUCK] slow-scan — {reason}"]
    text = text_of(inbox.messages[0])
    assert "Status:      " + status in text
    assert waited in text
    assert waited in html_of(inbox.messages[0])

    clock.at(seconds=limit.total_seconds() + 60)
    cycle()
    assert len(inbox.messages) == 1


def test_a_scan_finished_in_time_is_never_stuck_and_a_late_one_gets_a_resolved_notice(inbox, simulator, clock):
    for tracking_id in ("quick", "late"):
        simulator.add_scan(
            tracking_id, status="IN-PROGRESS", submitted_at=T0 - timedelta(minutes=1), started_at=T0
        )
    scans_track(ids=["quick", "late"])
    cycle()

    clock.at(minutes=119, seconds=59)
    simulator.set_status("quick", "SUCCESS")
    cycle()
    clock.at(minutes=120, seconds=1)
    cycle()

    assert subjects(inbox) == ["[STUCK] late — running 2h 00m, limit 2h"]

    clock.at(minutes=125)
    simulator.set_status("late", "SUCCESS")
    cycle()
    clock.at(minutes=126)
    cycle()

    assert subjects(inbox) == [
        "[STUCK] late — running 2h 00m, limit 2h",
        "[RESOLVED] late — no longer stuck: Succeeded",
    ]
    assert "Run time:    2h 05m" in text_of(inbox.messages[1])
    assert not Alert.objects.filter(scan__tracking_id="quick").exists()


# --- The mail server is down ----------------------------------------------------------------------------------


def _take_server_down(inbox, how: str) -> None:
    if how == "refusing":
        inbox.refuse = True  # answers 421 to the message
    else:
        inbox.stop()  # nothing listens: the connection itself is refused


def _bring_server_back(inbox, how: str) -> None:
    if how == "refusing":
        inbox.refuse = False
    else:
        inbox.start()


@pytest.mark.parametrize("how", ["refusing", "stopped"])
def test_an_alert_waits_while_smtp_is_down_and_is_delivered_exactly_once_after(inbox, simulator, clock, how):
    simulator.add_scan("scan-a", status="FAILED", error_msg="Quota exceeded")
    scans_track(ids=["scan-a"])
    _take_server_down(inbox, how)

    detected, sent = cycle()

    alert = Alert.objects.get()
    assert (detected.created, sent.sent, len(sent.failed)) == ({"failed": 1}, [], 1)
    assert (alert.state, alert.attempts, alert.sent_at) == ("pending", 1, None)
    assert alert.last_error  # the reason is kept for the Alerts page
    assert alert.next_attempt_at == T0 + timedelta(seconds=30)

    clock.at(seconds=30)
    alerts_run()  # still down: the second attempt backs off twice as long
    alert.refresh_from_db()
    assert (alert.state, alert.attempts, alert.next_attempt_at) == ("pending", 2, T0 + timedelta(seconds=90))

    _bring_server_back(inbox, how)
    clock.at(seconds=60)
    alerts_run()  # back, but the alert is not due yet
    assert inbox.messages == []

    clock.at(seconds=90)
    alerts_run()
    clock.at(seconds=120)
    cycle()
    alerts_run()

    assert heads(inbox) == ["[FAILED] scan-a"]
    alert.refresh_from_db()
    assert (alert.state, alert.attempts, alert.last_error) == ("sent", 3, "")


def test_send_alerts_command_fails_loudly_while_smtp_is_down_and_keeps_the_alert(inbox, simulator):
    simulator.add_scan("scan-a", status="FAILED")
    scans_track(ids=["scan-a"])
    scans_refresh_due()
    inbox.refuse = True
    err = io.StringIO()

    with pytest.raises(CommandError, match="1 alert\\(s\\) could not be sent"):
        call_command("send_alerts", stdout=io.StringIO(), stderr=err)

    assert "not sent [FAILED] scan-a — " in err.getvalue()
    assert Alert.objects.get().state == Alert.State.PENDING


def test_one_refused_message_does_not_lose_the_others(inbox, simulator, clock):
    # The server drops the connection after a 421: the rest of the batch fails too and is retried, not lost.
    for tracking_id in ("scan-a", "scan-b", "scan-c"):
        simulator.add_scan(tracking_id, status="FAILED")
    scans_track(ids=["scan-a", "scan-b", "scan-c"])
    inbox.refuse = True
    cycle()
    inbox.refuse = False

    clock.at(minutes=1)
    alerts_run()

    assert sorted(heads(inbox)) == ["[FAILED] scan-a", "[FAILED] scan-b", "[FAILED] scan-c"]
    assert set(Alert.objects.values_list("state", flat=True)) == {"sent"}


# --- Storms ---------------------------------------------------------------------------------------------------


def test_five_hundred_failures_in_one_cycle_make_one_digest_per_recipient(
    inbox, simulator, protecto_settings, monkeypatch
):
    # Written 100 at a time (a worker holds one chunk of rendered mails), still one digest listing the first 200.
    monkeypatch.setattr(alert_detection, "DETECT_CHUNK", 100)
    protecto_settings.PROTECTO_BATCH_SIZE = 100
    subscribe("alice", Alert.Kind.FAILED)
    ids = [f"storm-{n:03d}" for n in range(500)]
    for tracking_id in ids:
        simulator.add_scan(tracking_id, status="FAILED", error_msg=f"Connector timeout on {tracking_id}\nstack...")

    scans_track(ids=ids, label="bulk import")
    detected, sent = cycle()

    [message] = inbox.messages
    assert sorted(message.envelope_to) == sorted([*OPS, "alice@example.com"])
    assert message["Subject"] == "[FAILED] 500 scans at once"
    text, html = text_of(message), html_of(message)
    assert text.startswith("500 alerts of one kind (Scan failed)")
    for tracking_id in ids[:200]:
        assert f"{SITE}/scans/{tracking_id}/" in text
        assert f'<a href="{SITE}/scans/{tracking_id}/">' in html
    assert "Connector timeout on storm-199" in text and "storm-200" not in text
    assert "... and 300 more on the alerts page." in text and "... and 300 more on the alerts page." in html
    assert f"{SITE}/alerts/" in text
    assert (detected.digests, len(sent.sent)) == (1, 1)
    digest = Alert.objects.get(is_digest=True)
    assert digest.members.count() == 500
    assert Alert.objects.filter(state=Alert.State.IN_DIGEST, digest=digest).count() == 500

    cycle()
    assert len(inbox.messages) == 1


def test_up_to_the_threshold_every_alert_is_mailed_on_its_own(inbox, simulator):
    ids = [f"few-{n:02d}" for n in range(10)]
    for tracking_id in ids:
        simulator.add_scan(tracking_id, status="FAILED")
    scans_track(ids=ids)

    cycle()

    assert sorted(heads(inbox)) == [f"[FAILED] {tracking_id}" for tracking_id in ids]
    assert not Alert.objects.filter(is_digest=True).exists()


# --- The API itself ---------------------------------------------------------------------------------------------


def test_a_refused_token_alerts_at_once_then_once_on_recovery(inbox, simulator, clock, protecto_settings):
    simulator.add_scan("scan-a", status="PENDING")
    scans_track(ids=["scan-a"])
    protecto_settings.PROTECTO_AUTH_TOKEN = "wrong-token-abcdef"

    cycle()

    assert subjects(inbox) == ["[Protecto API] token refused: scan statuses are not updating"]
    assert "wrong-token-abcdef" not in inbox.messages[0].as_string()

    for n in range(1, 5):  # the outage goes on well past ALERT_API_DOWN_AFTER cycles: still one alert
        clock.at(seconds=30 * n)
        cycle()
    assert len(inbox.messages) == 1
    assert not Alert.objects.filter(kind=Alert.Kind.API_DOWN).exists()

    protecto_settings.PROTECTO_AUTH_TOKEN = simulator.config.token
    clock.at(seconds=150)
    cycle()
    clock.at(seconds=180)
    cycle()

    assert subjects(inbox)[1:] == ["[Protecto API recovered] scan statuses are updating again"]


def test_the_api_is_down_after_three_failed_cycles_and_recovers_once(inbox, simulator, clock):
    simulator.add_scan("scan-a", status="PENDING")
    scans_track(ids=["scan-a"])
    simulator.configure(error_rate=1.0)

    cycle()
    clock.at(seconds=30)
    cycle()
    cycle()  # nothing due at the same instant: an idle cycle neither counts nor ends the outage
    assert RefreshRun.objects.filter(outcome=RefreshRun.Outcome.IDLE).count() == 1
    assert inbox.messages == []

    clock.at(seconds=60)
    cycle()
    assert heads(inbox) == ["[Protecto API DOWN] 3 refresh cycles failed in a row"]
    assert "Since:      2026-11-28 09:00:00 UTC" in text_of(inbox.messages[0])

    clock.at(seconds=90)
    cycle()
    assert len(inbox.messages) == 1

    simulator.configure(error_rate=0.0)
    clock.at(seconds=120)
    cycle()
    clock.at(seconds=150)
    cycle()

    assert subjects(inbox)[1:] == ["[Protecto API recovered] scan statuses are updating again"]
    assert Alert.objects.filter(kind__in=["api_down", "api_auth", "api_recovered"]).count() == 2


def test_a_reported_outage_gets_its_recovery_even_if_a_later_alert_about_it_was_snoozed(
    inbox, simulator, clock, protecto_settings
):
    simulator.add_scan("scan-a", status="PENDING")
    scans_track(ids=["scan-a"])
    simulator.configure(error_rate=1.0)
    for n in range(3):
        clock.at(seconds=30 * n)
        cycle()
    assert heads(inbox) == ["[Protecto API DOWN] 3 refresh cycles failed in a row"]

    snooze = alerts_snooze(until=T0 + timedelta(minutes=10))
    simulator.configure(error_rate=0.0)
    protecto_settings.PROTECTO_AUTH_TOKEN = "wrong-token-abcdef"  # the same outage, now the token is refused
    clock.at(seconds=90)
    cycle()
    assert Alert.objects.get(kind=Alert.Kind.API_AUTH).state == Alert.State.SUPPRESSED

    alerts_end_snooze(snooze_id=snooze.pk)
    protecto_settings.PROTECTO_AUTH_TOKEN = simulator.config.token
    clock.at(seconds=120)
    cycle()

    assert subjects(inbox)[1:] == ["[Protecto API recovered] scan statuses are updating again"]


def test_two_failed_cycles_then_success_is_no_outage(inbox, simulator, clock):
    simulator.add_scan("scan-a", status="PENDING")
    scans_track(ids=["scan-a"])
    simulator.configure(error_rate=1.0)
    cycle()
    clock.at(seconds=30)
    cycle()
    simulator.configure(error_rate=0.0)
    clock.at(seconds=60)
    cycle()
    simulator.configure(error_rate=1.0)
    for n in (3, 4):
        clock.at(seconds=30 * n)
        cycle()

    assert inbox.messages == []


def _runs(*outcomes: str) -> None:
    """Finished refresh runs with these outcomes, 30 s apart from T0 (what cycles would have recorded)."""
    for n, outcome in enumerate(outcomes):
        started = T0 + timedelta(seconds=30 * n)
        RefreshRun.objects.create(started_at=started, finished_at=started, outcome=outcome, ids_asked=10)


def test_degraded_cycles_count_toward_the_api_down_alert_like_failed_ones(settings):
    settings.ALERT_EMAILS = OPS
    settings.ALERT_API_DOWN_AFTER = 3
    _runs("ok", "degraded", "failed", "degraded")

    alerts_detect(now=T0 + timedelta(minutes=2))

    alert = Alert.objects.get()
    assert (alert.kind, alert.outage.outcome) == (Alert.Kind.API_DOWN, "degraded")
    assert alert.subject == "[Protecto API DOWN] 3 refresh cycles failed in a row"


@pytest.mark.parametrize(
    ("outcomes", "alerted"),
    [
        (("ok", "failed", "failed", "abandoned"), False),  # two failed cycles: the abandoned one is no third
        (("ok", "failed", "abandoned", "failed", "failed"), True),  # nor does it end the streak
    ],
)
def test_an_abandoned_cycle_neither_counts_toward_nor_ends_an_outage(settings, outcomes, alerted):
    settings.ALERT_EMAILS = OPS
    settings.ALERT_API_DOWN_AFTER = 3
    _runs(*outcomes)

    alerts_detect(now=T0 + timedelta(minutes=3))

    assert Alert.objects.filter(kind=Alert.Kind.API_DOWN).exists() is alerted


def test_a_scan_unknown_to_protecto_is_alerted_once(inbox):
    subscribe("nina", Alert.Kind.NOT_FOUND)
    make_scan("typo-id-1", status=Scan.Status.NOT_FOUND, label="nightly HR")

    alerts_run()
    alerts_run()

    [message] = inbox.messages
    assert message["Subject"] == "[NOT FOUND] nightly HR — not reported by Protecto for 24 h"
    assert "nina@example.com" in message.envelope_to
    assert "has not reported this tracking ID for 24 hours" in text_of(message)
    assert "Tracking ID: typo-id-1" in text_of(message)


# --- Fast recovery after the mail server was down -------------------------------------------------------------


def test_when_the_mail_server_returns_one_send_delivers_every_waiting_alert_once(inbox, clock, settings):
    from tests.tcp_proxy import TcpProxy

    with TcpProxy("127.0.0.1", inbox.port) as proxy:
        settings.EMAIL_PORT = proxy.port
        proxy.refuse()
        failed_scans(3)
        for seconds in (0, 30, 90):  # each failed attempt doubles the wait: due again at 30 s, 90 s, 210 s
            clock.at(seconds=seconds)
            alerts_run()
        assert set(Alert.objects.values_list("next_attempt_at", flat=True)) == {T0 + timedelta(seconds=210)}

        proxy.heal()
        clock.at(seconds=100)
        make_scan("late-failure", status=Scan.Status.FAILED, ended_at=T0 + timedelta(seconds=95))
        _, sent = alerts_run()  # the new alert is due now; its success pulls the others forward

    assert len(sent.sent) == 4
    assert sorted(message["Message-ID"] for message in inbox.messages) == sorted(
        f"<scan-alert-{pk}@scans.example.com>" for pk in Alert.objects.values_list("pk", flat=True)
    )
    clock.at(seconds=400)
    alerts_run()
    assert len(inbox.messages) == 4


def test_a_success_does_not_pull_forward_an_alert_another_sender_is_mailing(inbox, clock):
    failed_scans(1)
    claimed = Alert.objects.create(
        kind=Alert.Kind.API_DOWN, subject="x", body_text="x", body_html="x", recipients=OPS,
        claim_token="other-sender", next_attempt_at=T0 + timedelta(minutes=10),
    )  # fmt: skip

    alerts_run()

    claimed.refresh_from_db()
    assert (claimed.next_attempt_at, claimed.state) == (T0 + timedelta(minutes=10), Alert.State.PENDING)
    assert len(inbox.messages) == 1


def test_the_retry_backoff_is_capped_at_five_minutes(inbox, clock):
    failed_scans(1)
    alerts_detect()
    Alert.objects.update(attempts=12)  # it has been failing for hours
    inbox.refuse = True

    alerts_send_due()

    assert Alert.objects.get().next_attempt_at == T0 + timedelta(minutes=5)


# --- Mutes and snooze -----------------------------------------------------------------------------------------


def test_muted_alerts_muted_labels_and_a_snooze_send_nothing_and_show_as_suppressed(inbox, simulator, clock):
    for tracking_id in ("muted-scan", "in-muted-label", "other"):
        simulator.add_scan(tracking_id, status="FAILED")
    scans_track(ids=["muted-scan", "other"], label="crm")
    scans_track(ids=["in-muted-label"], label="noisy test tenant")
    alerts_mute(scan=Scan.objects.get(tracking_id="muted-scan"))
    alerts_mute(label="noisy test tenant")

    cycle()

    assert heads(inbox) == ["[FAILED] crm"]
    reasons = dict(
        Alert.objects.filter(state=Alert.State.SUPPRESSED).values_list("scan__tracking_id", "suppressed_reason")
    )
    assert reasons == {"muted-scan": "scan muted", "in-muted-label": "label 'noisy test tenant' muted"}

    clock.at(minutes=1)
    alerts_snooze(until=T0 + timedelta(hours=1), reason="Protecto maintenance")
    simulator.add_scan("during-snooze", status="FAILED")
    simulator.add_scan("still-running", status="IN-PROGRESS")
    scans_track(ids=["during-snooze", "still-running"])
    cycle()
    simulator.configure(error_rate=1.0)  # an API outage during the window is suppressed too
    for n in range(1, 4):
        clock.at(minutes=1, seconds=30 * n)
        cycle()

    assert len(inbox.messages) == 1
    snoozed = Alert.objects.filter(suppressed_reason="snoozed until 2026-11-28 10:00 UTC")
    assert sorted(snoozed.values_list("kind", flat=True)) == ["api_down", "failed"]

    simulator.configure(error_rate=0.0)
    clock.at(hours=1, seconds=1)
    simulator.add_scan("after-snooze", status="FAILED")
    scans_track(ids=["after-snooze"])
    cycle()

    # A recovery from an outage nobody was told about would only confuse: it is not sent either.
    assert heads(inbox)[1:] == ["[FAILED] after-snooze"]


def test_a_scheduled_window_holds_back_alerts_only_between_its_start_and_its_end(inbox, simulator, clock):
    window = alerts_snooze(starts_at=T0 + timedelta(minutes=30), until=T0 + timedelta(hours=1), reason="upgrade")

    def fail_now(tracking_id: str) -> None:
        simulator.add_scan(tracking_id, status="FAILED")
        scans_track(ids=[tracking_id])
        cycle()

    fail_now("before-the-window")
    clock.at(minutes=29, seconds=59)
    fail_now("just-before-the-window")
    clock.at(minutes=30)
    fail_now("when-it-starts")
    clock.at(minutes=59, seconds=59)
    fail_now("just-before-it-ends")
    clock.at(hours=1)
    fail_now("when-it-ends")

    assert heads(inbox) == [
        "[FAILED] before-the-window",
        "[FAILED] just-before-the-window",
        "[FAILED] when-it-ends",
    ]
    held = Alert.objects.filter(state=Alert.State.SUPPRESSED)
    assert sorted(held.values_list("scan__tracking_id", "snooze", "suppressed_reason")) == [
        ("just-before-it-ends", window.pk, "snoozed until 2026-11-28 10:00 UTC"),
        ("when-it-starts", window.pk, "snoozed until 2026-11-28 10:00 UTC"),
    ]


def test_a_window_ended_early_or_cancelled_before_it_starts_holds_nothing_back_after(inbox, simulator, clock):
    in_force = alerts_snooze(until=T0 + timedelta(hours=1))
    later = alerts_snooze(starts_at=T0 + timedelta(hours=2), until=T0 + timedelta(hours=3))
    simulator.add_scan("during", status="FAILED")
    scans_track(ids=["during"])
    cycle()

    clock.at(minutes=10)
    assert alerts_end_snooze(snooze_id=in_force.pk).ended_at == T0 + timedelta(minutes=10)
    assert alerts_end_snooze(snooze_id=in_force.pk) is None  # a second "End now" changes nothing
    simulator.add_scan("after-end-now", status="FAILED")
    scans_track(ids=["after-end-now"])
    cycle()
    assert alerts_end_snooze(snooze_id=later.pk) is not None
    clock.at(hours=2, minutes=30)
    simulator.add_scan("in-cancelled-window", status="FAILED")
    scans_track(ids=["in-cancelled-window"])
    cycle()

    assert heads(inbox) == ["[FAILED] after-end-now", "[FAILED] in-cancelled-window"]
    assert Alert.objects.get(scan__tracking_id="during").state == Alert.State.SUPPRESSED


def test_only_a_window_that_has_begun_and_not_ended_is_active(clock):
    now = T0
    began = alerts_snooze(until=now + timedelta(hours=1))
    scheduled = alerts_snooze(starts_at=now + timedelta(hours=1), until=now + timedelta(hours=2))
    ended = alerts_end_snooze(snooze_id=alerts_snooze(until=now + timedelta(hours=1)).pk)
    clock.at(seconds=1)
    now = T0 + timedelta(seconds=1)
    over = AlertSnooze.objects.create(starts_at=now - timedelta(hours=2), until=now - timedelta(hours=1))

    assert list(AlertSnooze.objects.active(now)) == [began]
    assert list(AlertSnooze.objects.scheduled(now)) == [scheduled]
    every = [began, scheduled, ended, over]
    assert [snooze for snooze in every if snooze.is_active(now)] == [began]
    assert [snooze for snooze in every if snooze.is_scheduled(now)] == [scheduled]
    assert alert_detection.active_snooze(now=now) == began
    assert alert_detection.active_snooze(now=now + timedelta(hours=1, seconds=30)) == scheduled


def test_the_database_refuses_a_window_that_ends_before_it_starts():
    with pytest.raises(IntegrityError), transaction.atomic():
        AlertSnooze.objects.create(starts_at=T0 + timedelta(hours=1), until=T0)


def test_a_scan_still_stuck_and_an_api_still_down_when_the_snooze_ends_are_alerted_then(inbox, simulator, clock):
    simulator.add_scan("slow", status="PENDING", submitted_at=T0)
    scans_track(ids=["slow"])
    alerts_snooze(until=T0 + timedelta(hours=1), reason="Protecto maintenance")
    clock.at(minutes=31)
    cycle()
    simulator.configure(error_rate=1.0)
    for n in range(1, 4):
        clock.at(minutes=31, seconds=30 * n)
        cycle()
    clock.at(minutes=45)
    cycle()
    assert inbox.messages == []
    assert sorted(Alert.objects.values_list("kind", "state")) == [
        ("api_down", "suppressed"),
        ("stuck", "suppressed"),
    ]

    clock.at(hours=1, seconds=1)
    cycle()
    clock.at(hours=1, seconds=31)
    cycle()  # and only once

    assert sorted(subject.split(" refresh")[0] for subject in subjects(inbox)) == [
        "[Protecto API DOWN] 5",
        "[STUCK] slow — pending 1h 00m, limit 30m",
    ]


def test_a_snooze_or_mute_made_while_an_alert_waits_for_the_mail_server_stops_it(inbox, simulator, clock):
    simulator.add_scan("scan-a", status="FAILED")
    simulator.add_scan("scan-b", status="FAILED")
    scans_track(ids=["scan-a", "scan-b"])
    inbox.refuse = True
    cycle()
    inbox.refuse = False

    clock.at(minutes=1)
    alerts_mute(scan=Scan.objects.get(tracking_id="scan-a"))
    alerts_snooze(until=T0 + timedelta(minutes=30))
    out = io.StringIO()
    call_command("send_alerts", stdout=out)
    clock.at(minutes=31)  # the snooze is over, but what it held back stays unsent
    alerts_run()

    assert inbox.messages == []
    held = next(line for line in out.getvalue().splitlines() if line.startswith("held     [FAILED] scan-b — "))
    assert held.endswith(": snoozed until 2026-11-28 09:30 UTC")
    assert set(Alert.objects.values_list("scan__tracking_id", "state")) == {
        ("scan-a", "suppressed"),
        ("scan-b", "suppressed"),
    }


def test_a_stuck_alert_nobody_got_has_no_resolved_notice(inbox, simulator, clock):
    simulator.add_scan("scan-a", status="PENDING", submitted_at=T0)
    scans_track(ids=["scan-a"])
    mute = alerts_mute(scan=Scan.objects.get(tracking_id="scan-a"))
    clock.at(minutes=31)
    cycle()
    alerts_unmute(mute_id=mute.pk)

    clock.at(minutes=40)
    simulator.set_status("scan-a", "SUCCESS")
    cycle()

    assert inbox.messages == []
    assert list(Alert.objects.values_list("kind", "state")) == [("stuck", "suppressed")]


# --- Identity ---------------------------------------------------------------------------------------------------


def test_an_outage_longer_than_two_hundred_cycles_is_still_one_alert(settings):
    settings.ALERT_EMAILS = OPS
    settings.ALERT_API_DOWN_AFTER = 3
    RefreshRun.objects.create(started_at=T0 - timedelta(minutes=1), outcome=RefreshRun.Outcome.OK)
    failing = [
        RefreshRun(started_at=T0 + timedelta(seconds=30 * n), outcome=RefreshRun.Outcome.FAILED, errors=1)
        for n in range(250)
    ]
    RefreshRun.objects.bulk_create(failing)
    first = RefreshRun.objects.get(started_at=T0)

    alerts_detect(now=T0 + timedelta(hours=3))
    RefreshRun.objects.create(started_at=T0 + timedelta(hours=3), outcome=RefreshRun.Outcome.FAILED, errors=1)
    alerts_detect(now=T0 + timedelta(hours=3, seconds=30))

    alert = Alert.objects.get()
    assert (alert.kind, alert.outage, alert.snooze) == (Alert.Kind.API_DOWN, first, None)
    assert alert.subject == "[Protecto API DOWN] 250 refresh cycles failed in a row"


def test_the_first_run_of_an_alerted_outage_outlives_the_refresh_run_retention(inbox, simulator, clock):
    simulator.add_scan("scan-a", status="PENDING")
    scans_track(ids=["scan-a"])
    simulator.configure(error_rate=1.0)
    for n in range(3):
        clock.at(seconds=30 * n)
        cycle()
    outage = Alert.objects.get(kind=Alert.Kind.API_DOWN).outage
    simulator.configure(error_rate=0.0)

    clock.at(days=8)
    cycle()

    # The other runs of that week went with the retention; the one the alert is about stayed.
    assert list(RefreshRun.objects.filter(started_at__lt=T0 + timedelta(days=1))) == [outage]
    recovered = Alert.objects.get(kind=Alert.Kind.API_RECOVERED)
    assert (recovered.outage, recovered.state) == (outage, Alert.State.SENT)


def test_the_database_keeps_one_alert_per_scan_or_outage_kind_and_snooze():
    scan = make_scan("one-alert")
    run = RefreshRun.objects.create(outcome=RefreshRun.Outcome.FAILED)
    snooze = alerts_snooze(until=datetime.now(UTC) + timedelta(hours=1))
    identities = [
        {"scan": scan, "kind": Alert.Kind.STUCK},
        {"scan": scan, "kind": Alert.Kind.STUCK, "snooze": snooze},
        {"outage": run, "kind": Alert.Kind.API_DOWN},
        {"outage": run, "kind": Alert.Kind.API_DOWN, "snooze": snooze},
    ]

    def alerts() -> list[Alert]:
        return [Alert(subject="x", body_text="x", body_html="x", **identity) for identity in identities]

    Alert.objects.bulk_create(alerts())
    Alert.objects.bulk_create(alerts(), ignore_conflicts=True)  # what a second detection does: nothing
    assert Alert.objects.count() == 4
    for identity in identities:
        with pytest.raises(IntegrityError), transaction.atomic():
            Alert.objects.create(subject="again", body_text="x", body_html="x", **identity)
    # Digests are not about one thing: any number of them.
    Alert.objects.bulk_create([Alert(kind=Alert.Kind.FAILED, is_digest=True) for _ in range(2)])
    assert Alert.objects.filter(is_digest=True).count() == 2


# --- Concurrency ----------------------------------------------------------------------------------------------


def failed_scans(count: int) -> None:
    for n in range(count):
        make_scan(
            f"fail-{n:02d}", status=Scan.Status.FAILED, error_message="boom", last_changed_at=datetime.now(UTC)
        )


def _in_threads(target, count: int = 2) -> list[BaseException]:
    """Run `target` in `count` threads released together; return what they raised."""
    failures: list[BaseException] = []
    start = threading.Barrier(count)

    def run() -> None:
        try:
            start.wait()
            target()
        except BaseException as exc:  # reported by the caller: a thread's exception would otherwise vanish
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return failures


@pytest.mark.django_db(transaction=True)
def test_two_workers_sending_one_outbox_deliver_each_alert_once(settings, smtp_server):
    settings.ALERT_EMAILS = OPS
    settings.ALERT_DIGEST_THRESHOLD = 1000
    failed_scans(40)
    assert alerts_detect().created == {"failed": 40}
    sent_by: list[int] = []

    def worker() -> None:
        # Small batches, so the two workers' claims interleave instead of one taking the whole outbox. A batch
        # the other worker claimed first comes back empty: go on until nothing is left waiting.
        total = 0
        deadline = time.monotonic() + 20
        while Alert.objects.filter(state=Alert.State.PENDING).exists() and time.monotonic() < deadline:
            total += len(alerts_send_due(limit=4).sent)
        sent_by.append(total)

    assert _in_threads(worker) == []

    message_ids = [message["Message-ID"] for message in smtp_server.messages]
    assert len(message_ids) == 40
    assert len(set(message_ids)) == 40
    assert sum(sent_by) == 40
    assert min(sent_by) > 0, sent_by  # both really worked the outbox at once
    assert set(Alert.objects.values_list("state", flat=True)) == {"sent"}


@pytest.mark.django_db(transaction=True)
def test_two_detections_at_once_write_each_alert_and_the_digest_once(settings, smtp_server):
    settings.ALERT_EMAILS = OPS
    settings.ALERT_DIGEST_THRESHOLD = 10
    failed_scans(30)

    assert _in_threads(alerts_detect) == []
    alerts_send_due()

    assert Alert.objects.filter(is_digest=False).count() == 30
    assert Alert.objects.get(is_digest=True).members.count() == 30
    assert [message["Subject"] for message in smtp_server.messages] == ["[FAILED] 30 scans at once"]


# --- Migration 0008: keys into columns --------------------------------------------------------------------------

BEFORE_0008 = [("scans", "0007_scan_no_default_ordering")]
AT_0008 = [("scans", "0008_alert_identity_columns")]


def _migrate(targets) -> Apps:
    """Move the test database's schema to `targets` and return the models as they are there."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _legacy_outbox(apps) -> dict[str, object]:
    """Alerts as 0007 stored them, keyed by their string key; some name a snooze or run deleted since."""
    Scan, Alert = apps.get_model("scans", "Scan"), apps.get_model("scans", "Alert")
    RefreshRun, AlertSnooze = apps.get_model("scans", "RefreshRun"), apps.get_model("scans", "AlertSnooze")
    scan, other = Scan.objects.create(tracking_id="mig-1"), Scan.objects.create(tracking_id="mig-2")
    run, gone_run = (RefreshRun.objects.create(outcome="failed") for _ in range(2))
    snooze, gone_snooze = (AlertSnooze.objects.create(until=T0) for _ in range(2))
    gone_run_pk, gone_snooze_pk = gone_run.pk, gone_snooze.pk
    gone_run.delete()
    gone_snooze.delete()
    rows = {
        f"failed:{scan.pk}": {"kind": "failed", "scan": scan},
        f"stuck:{scan.pk}": {"kind": "stuck", "scan": scan},
        f"stuck:{scan.pk}:snoozed:{snooze.pk}": {"kind": "stuck", "scan": scan},
        f"stuck:{other.pk}:snoozed:{gone_snooze_pk}": {"kind": "stuck", "scan": other},
        f"stuck_resolved:{scan.pk}": {"kind": "stuck_resolved", "scan": scan},
        f"api_down:{run.pk}": {"kind": "api_down"},
        f"api_down:{run.pk}:snoozed:{snooze.pk}": {"kind": "api_down"},
        f"api_recovered:{run.pk}": {"kind": "api_recovered"},
        f"api_auth:{gone_run_pk}": {"kind": "api_auth"},
        "digest:failed:0123abcd": {"kind": "failed", "is_digest": True},
    }
    for key, fields in rows.items():
        Alert.objects.create(key=key, subject=key, body_text="", body_html="", created_at=T0, **fields)
    return {
        "scan": scan.pk,
        "other": other.pk,
        "run": run.pk,
        "snooze": snooze.pk,
        "gone_snooze": gone_snooze_pk,
        "gone_run": gone_run_pk,
    }


@pytest.mark.django_db(transaction=True)
def test_migration_0008_moves_each_key_into_columns_and_back():
    # Transactional: the SQLite schema editor cannot run inside the atomic block of an ordinary test.
    try:
        ids = _legacy_outbox(_migrate(BEFORE_0008))

        apps = _migrate(AT_0008)

        Alert = apps.get_model("scans", "Alert")
        identity = {row[0]: row[1:] for row in Alert.objects.values_list("subject", "scan", "outage", "snooze")}
        scan, run, snooze, gone_snooze = ids["scan"], ids["run"], ids["snooze"], ids["gone_snooze"]
        assert identity == {
            f"failed:{scan}": (scan, None, None),
            f"stuck:{scan}": (scan, None, None),
            f"stuck:{scan}:snoozed:{snooze}": (scan, None, snooze),
            f"stuck:{ids['other']}:snoozed:{gone_snooze}": (ids["other"], None, gone_snooze),
            f"stuck_resolved:{scan}": (scan, None, None),
            f"api_down:{run}": (None, run, None),
            f"api_down:{run}:snoozed:{snooze}": (None, run, snooze),
            f"api_recovered:{run}": (None, run, None),
            # Its first run went with the retention before the run was tied to the alert.
            f"api_auth:{ids['gone_run']}": (None, None, None),
            "digest:failed:0123abcd": (None, None, None),
        }
        recreated = apps.get_model("scans", "AlertSnooze").objects.get(pk=gone_snooze)
        assert (recreated.until, recreated.ended_at) == (T0, T0)  # over, so it holds nothing back now
        with pytest.raises(IntegrityError), transaction.atomic():
            Alert.objects.create(kind="stuck", scan_id=scan, subject="again", body_text="", body_html="")

        apps = _migrate(BEFORE_0008)

        rebuilt = dict(apps.get_model("scans", "Alert").objects.values_list("subject", "key"))
        assert rebuilt.pop(f"api_auth:{ids['gone_run']}").startswith("api_auth:legacy-")
        assert rebuilt.pop("digest:failed:0123abcd").startswith("digest:failed:")
        assert rebuilt == {subject: subject for subject in rebuilt}  # every other key exactly as it was
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
