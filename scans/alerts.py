"""Alerts: detect what ops must hear about, write it to the outbox, and send the outbox.

Every alert is a database row before anything is mailed. Its identity is in columns (scan or API outage, kind,
and the snooze that held it back) under unique constraints, so detection is idempotent; senders claim rows with a
conditional update, so two workers never mail one alert. Also the services behind the alert settings page:
subscriptions, mutes and the maintenance snooze, which decide who is told and what is held back.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.mail import get_connection
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from scans.emails import alerts_url, message_for, render_email, scan_url
from scans.models import Alert, AlertMute, AlertSnooze, AlertSubscription, RefreshRun, Scan

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

# A claimed alert whose sender died is tried again after this long.
SEND_LEASE = timedelta(minutes=10)
FIRST_RETRY_SECONDS = 30
MAX_RETRY_SECONDS = 30 * 60
# A failure older than this when first seen (e.g. an old ID just registered) is not news.
FAILED_NEWS_WINDOW = timedelta(hours=24)
MAX_PER_KIND_PER_CYCLE = 5000
SCAN_KINDS = (Alert.Kind.FAILED, Alert.Kind.STUCK, Alert.Kind.STUCK_RESOLVED)
UNHEALTHY = (RefreshRun.Outcome.FAILED, RefreshRun.Outcome.AUTH_REFUSED)
# Cycles that say nothing about the API's health: still going, or nothing was due.
UNFINISHED = (RefreshRun.Outcome.RUNNING, RefreshRun.Outcome.IDLE)
# States of an alert someone was (or will be) told about; a follow-up (resolved, recovered) needs one of these.
ANNOUNCED = (Alert.State.PENDING, Alert.State.SENT, Alert.State.IN_DIGEST)


@dataclass
class DetectResult:
    created: dict[str, int] = field(default_factory=dict)
    suppressed: int = 0
    digests: int = 0


@dataclass
class SendResult:
    sent: list[Alert] = field(default_factory=list)
    failed: list[tuple[Alert, str]] = field(default_factory=list)
    suppressed: list[Alert] = field(default_factory=list)


def alert_recipients(*, kind: str) -> list[str]:
    """ALERT_EMAILS plus every user subscribed to this kind, each address once."""
    addresses = dict.fromkeys(address.lower() for address in settings.ALERT_EMAILS)
    for subscription in AlertSubscription.objects.select_related("user").filter(user__is_active=True):
        if kind in subscription.kinds and subscription.address:
            addresses.setdefault(subscription.address.lower(), None)
    return list(addresses)


def active_snooze(*, now: datetime) -> AlertSnooze | None:
    """The maintenance snooze in force at `now`, if any (the latest-ending one when they overlap)."""
    return AlertSnooze.objects.filter(until__gt=now, ended_at__isnull=True).order_by("-until").first()


class _Suppression:
    """Why an alert must not be sent: a snooze, a muted scan or a muted label (loaded once per cycle)."""

    def __init__(self, now: datetime) -> None:
        self.snooze = active_snooze(now=now)
        self.scan_ids = set(AlertMute.objects.filter(scan__isnull=False).values_list("scan_id", flat=True))
        self.labels = set(AlertMute.objects.exclude(label="").values_list("label", flat=True))

    def still_counts(self) -> Q:
        """The alerts that make a new one about the same thing redundant.

        Those not held back by a snooze, and those the current snooze holds back. One held back by a snooze that
        is over does not count: a condition that persists (a stuck scan, an API still down) is alerted again once
        the snooze ends.
        """
        if self.snooze is None:
            return Q(snooze__isnull=True)
        return Q(snooze__isnull=True) | Q(snooze=self.snooze)

    def reason(self, scan: Scan | None) -> str:
        if self.snooze:
            return f"snoozed until {self.snooze.until:%Y-%m-%d %H:%M} UTC"
        if scan is not None and scan.pk in self.scan_ids:
            return "scan muted"
        if scan is not None and scan.label and scan.label in self.labels:
            return f"label '{scan.label}' muted"
        return ""


def _scan_context(scan: Scan, now: datetime) -> dict:
    return {"scan": scan, "scan_url": scan_url(scan), "now": now, "name": scan.label or scan.tracking_id}


def _candidates(kind: str, now: datetime, suppression: _Suppression):
    tracked = Scan.objects.tracked()
    if kind == Alert.Kind.FAILED:
        # By the API's end time where it gave one: a scan tracked today that failed last week changes status in
        # our records now (last_changed_at), but it is old news.
        failed_at = Coalesce("ended_at", "last_changed_at")
        scans = tracked.alias(failed_at=failed_at).filter(
            status=Scan.Status.FAILED, failed_at__gte=now - FAILED_NEWS_WINDOW
        )
    elif kind == Alert.Kind.STUCK:
        scans = tracked.stuck(now)
    else:  # resolved: a scan we told someone was stuck has finished (a muted or snoozed stuck alert was not told)
        scans = Scan.objects.finished().filter(alerts__kind=Alert.Kind.STUCK, alerts__state__in=ANNOUNCED)
    already = Alert.objects.filter(scan=OuterRef("pk"), kind=kind)
    if kind == Alert.Kind.STUCK:
        # Being stuck goes on: held back by a snooze, it is alerted when the snooze ends if it still is. A failure
        # or a resolution is one event: alerted once, snoozed or not.
        already = already.filter(suppression.still_counts())
    return scans.exclude(Exists(already)).distinct().order_by("pk")[:MAX_PER_KIND_PER_CYCLE]


def _new_alert(
    *,
    kind: str,
    scan: Scan | None = None,
    outage: RefreshRun | None = None,
    suppression: _Suppression,
    context: dict,
    recipients: list[str],
) -> Alert:
    reason = suppression.reason(scan)
    subject, text, html = render_email(kind, context)
    if reason:
        state = Alert.State.SUPPRESSED
    elif not recipients:
        state, reason = Alert.State.NO_RECIPIENTS, "no recipients: set ALERT_EMAILS or subscribe a user"
    else:
        state = Alert.State.PENDING
    return Alert(
        kind=kind, scan=scan, outage=outage, snooze=suppression.snooze, recipients=recipients, subject=subject,
        body_text=text, body_html=html, state=state, suppressed_reason=reason[:200],
    )  # fmt: skip


def _store(alerts: list[Alert], *, kind: str, now: datetime, result: DetectResult) -> None:
    """Write the new alerts; more than ALERT_DIGEST_THRESHOLD to send becomes one digest instead of a flood."""
    to_send = [alert for alert in alerts if alert.state == Alert.State.PENDING]
    for alert in alerts:
        # Due at `now`, so the send that follows this detection in the same run mails it at once.
        alert.created_at = alert.next_attempt_at = now
    # One transaction: no sender sees the digest before it is known to hold at least one alert.
    with transaction.atomic():
        digest = None
        if len(to_send) > settings.ALERT_DIGEST_THRESHOLD:
            digest = Alert.objects.create(
                kind=kind, is_digest=True, recipients=to_send[0].recipients, created_at=now, next_attempt_at=now
            )
            for alert in to_send:
                alert.state, alert.digest = Alert.State.IN_DIGEST, digest
        # ignore_conflicts: a concurrent detection that wrote the same alert first wins (the unique constraints on
        # its identity), and nothing is doubled.
        Alert.objects.bulk_create(alerts, ignore_conflicts=True, batch_size=500)
        if digest is not None:
            # The digest lists only the alerts this detection wrote: the winner of a race mails the others.
            members = list(digest.members.select_related("scan").order_by("pk"))
            if not members:
                digest.delete()
            else:
                digest.subject, digest.body_text, digest.body_html = render_email(
                    "digest",
                    {"kind": kind, "kind_label": Alert.Kind(kind).label, "alerts": members, "count": len(members),
                     "alerts_url": alerts_url(), "now": now},
                )  # fmt: skip
                digest.save(update_fields=["subject", "body_text", "body_html"])
                result.digests += 1
    result.created[kind] = result.created.get(kind, 0) + len(alerts)
    result.suppressed += sum(alert.state == Alert.State.SUPPRESSED for alert in alerts)


def _detect_scan_alerts(now: datetime, suppression: _Suppression, result: DetectResult) -> None:
    for kind in SCAN_KINDS:
        recipients = alert_recipients(kind=kind)
        alerts = [
            _new_alert(
                kind=kind,
                scan=scan,
                suppression=suppression,
                context=_scan_context(scan, now),
                recipients=recipients,
            )
            for scan in _candidates(kind, now, suppression)
        ]
        if alerts:
            _store(alerts, kind=kind, now=now, result=result)


def _detect_api_alerts(now: datetime, suppression: _Suppression, result: DetectResult) -> None:
    """Token refused: alert at once. Other failures: after ALERT_API_DOWN_AFTER cycles in a row. Then recovery."""
    finished = RefreshRun.objects.exclude(outcome__in=UNFINISHED)
    latest = finished.first()
    if latest is None:
        return
    if latest.outcome in UNHEALTHY:
        alert = _outage_alert(finished, latest, now, suppression)
    else:
        alert = _recovery_alert(latest, now, suppression)
    if alert is not None:
        _store([alert], kind=alert.kind, now=now, result=result)


def _outage_alert(
    finished: QuerySet[RefreshRun], latest: RefreshRun, now: datetime, suppression: _Suppression
) -> Alert | None:
    """The alert for the failing cycles since the last healthy one, unless it was written already."""
    runs = finished.filter(outcome__in=UNHEALTHY)
    healthy = finished.exclude(outcome__in=UNHEALTHY).first()
    if healthy is not None:
        # Ordered like RefreshRun's Meta: runs started in the same instant are told apart by pk.
        after = Q(started_at__gt=healthy.started_at) | Q(started_at=healthy.started_at, pk__gt=healthy.pk)
        runs = runs.filter(after)
    cycles = runs.count()
    if runs.filter(outcome=RefreshRun.Outcome.AUTH_REFUSED).exists():
        kind = Alert.Kind.API_AUTH
    elif cycles >= settings.ALERT_API_DOWN_AFTER:
        kind = Alert.Kind.API_DOWN
    else:
        return None
    # The outage is known by its first failing run, which stays put however long the outage lasts (runs an alert
    # names outlive the refresh-run retention).
    first = runs.order_by("started_at", "pk").first()
    # An outage held back by a snooze is alerted when the snooze ends if the API is still down.
    if Alert.objects.filter(suppression.still_counts(), kind=kind, outage=first).exists():
        return None
    context = {"failed_cycles": cycles, "latest": latest, "since": first.started_at, "alerts_url": alerts_url(),
               "now": now}  # fmt: skip
    recipients = alert_recipients(kind=kind)
    return _new_alert(kind=kind, outage=first, suppression=suppression, context=context, recipients=recipients)


def _recovery_alert(latest: RefreshRun, now: datetime, suppression: _Suppression) -> Alert | None:
    """One recovery notice per outage, and only for an outage somebody was told about."""
    # Not for an outage nobody was told about (it was snoozed, or had no recipients).
    outages = Alert.objects.filter(kind__in=[Alert.Kind.API_AUTH, Alert.Kind.API_DOWN], state__in=ANNOUNCED)
    last_outage = outages.select_related("outage").first()
    # No outage column: an alert from before migration 0008 whose first run the retention had already deleted.
    if last_outage is None or last_outage.outage_id is None or latest.started_at < last_outage.created_at:
        return None
    if Alert.objects.filter(kind=Alert.Kind.API_RECOVERED, outage_id=last_outage.outage_id).exists():
        return None
    context = {"outage": last_outage, "recovered": latest, "alerts_url": alerts_url(), "now": now}
    kind = Alert.Kind.API_RECOVERED
    recipients = alert_recipients(kind=kind)
    return _new_alert(
        kind=kind, outage=last_outage.outage, suppression=suppression, context=context, recipients=recipients
    )


def alerts_detect(*, now: datetime | None = None) -> DetectResult:
    """Write an alert for every failed, stuck or resolved scan and API outage or recovery not yet alerted."""
    now = now or timezone.now()
    result = DetectResult()
    suppression = _Suppression(now)
    _detect_scan_alerts(now, suppression, result)
    _detect_api_alerts(now, suppression, result)
    return result


def _retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0), MAX_RETRY_SECONDS))


def alerts_send_due(*, now: datetime | None = None, limit: int = 200) -> SendResult:
    """Mail the pending alerts that are due; a failed send waits with backoff and is tried again later."""
    now = now or timezone.now()
    result = SendResult()
    claim = _claim_due(now=now, limit=limit)
    if claim is None:
        return result
    token, claimed = claim
    to_send = _drop_suppressed(claimed, token=token, now=now, result=result)
    if to_send:
        _mail(to_send, token=token, now=now, result=result)
    return result


def _claim_due(*, now: datetime, limit: int) -> tuple[str, list[Alert]] | None:
    """Claim up to `limit` due alerts for this sender alone; None when none is due."""
    due = Alert.objects.filter(state=Alert.State.PENDING, next_attempt_at__lte=now)
    candidates = list(due.order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:limit])
    if not candidates:
        return None
    token = uuid.uuid4().hex
    # Conditional claim: a row another sender claimed first has moved its next_attempt_at past now.
    due.filter(pk__in=candidates).update(
        claim_token=token, next_attempt_at=now + SEND_LEASE, attempts=F("attempts") + 1
    )
    return token, list(Alert.objects.filter(claim_token=token).select_related("scan").order_by("pk"))


def _drop_suppressed(claimed: list[Alert], *, token: str, now: datetime, result: SendResult) -> list[Alert]:
    """Record as suppressed the claimed alerts a snooze or mute now holds back; return the rest.

    A snooze or mute made while an alert waited (e.g. for the mail server to come back) applies to it too.
    """
    suppression = _Suppression(now)
    to_send = []
    for alert in claimed:
        reason = suppression.reason(alert.scan)
        if not reason:
            to_send.append(alert)
            continue
        alert.state, alert.suppressed_reason = Alert.State.SUPPRESSED, reason[:200]
        Alert.objects.filter(pk=alert.pk, claim_token=token).update(
            state=alert.state, suppressed_reason=alert.suppressed_reason, claim_token=""
        )
        result.suppressed.append(alert)
    return to_send


def _mail(alerts: list[Alert], *, token: str, now: datetime, result: SendResult) -> None:
    """Send each alert over one SMTP connection and record each outcome on its row."""
    connection = get_connection(fail_silently=False, timeout=settings.EMAIL_TIMEOUT)
    try:
        connection.open()
    except Exception as exc:
        for alert in alerts:
            _record_failure(alert, token, exc, now, result)
        return
    try:
        for alert in alerts:
            try:
                message_for(alert, connection=connection).send()
            except Exception as exc:
                _record_failure(alert, token, exc, now, result)
                continue
            Alert.objects.filter(pk=alert.pk, claim_token=token).update(
                state=Alert.State.SENT, sent_at=timezone.now(), claim_token="", last_error=""
            )
            result.sent.append(alert)
    finally:
        try:
            connection.close()
        except Exception:  # the server may already have gone; what was sent is recorded
            logger.warning("closing the mail connection failed", exc_info=True)


def _record_failure(alert: Alert, token: str, exc: Exception, now: datetime, result: SendResult) -> None:
    error = f"{type(exc).__name__}: {exc}"[:1000]
    logger.warning("sending alert %s failed (attempt %d): %s", alert.pk, alert.attempts, error)
    Alert.objects.filter(pk=alert.pk, claim_token=token).update(
        claim_token="", last_error=error, next_attempt_at=now + _retry_delay(alert.attempts)
    )
    result.failed.append((alert, error))


def alerts_run(*, now: datetime | None = None) -> tuple[DetectResult, SendResult]:
    """Detect, then send what is due: what the Celery task and `manage.py send_alerts` run."""
    now = now or timezone.now()
    return alerts_detect(now=now), alerts_send_due(now=now)


def alert_resend(*, alert_ids: Iterable[int], now: datetime | None = None) -> int:
    """Send the given unsent alerts at the next run instead of after their backoff; return how many."""
    now = now or timezone.now()
    return Alert.objects.filter(pk__in=list(alert_ids), state=Alert.State.PENDING).update(next_attempt_at=now)


def alert_subscription_for(*, user: User) -> AlertSubscription | None:
    """The user's alert subscription, if they saved one."""
    return AlertSubscription.objects.filter(user=user).first()


def alert_mute_list() -> list[AlertMute]:
    """Every mute, newest first, with its scan and author (the settings page's table)."""
    return list(AlertMute.objects.select_related("scan", "created_by").order_by("-created_at", "-pk"))


def alert_subscription_save(*, user: User, email: str, kinds: Iterable[str]) -> AlertSubscription:
    """Save which kinds of alert `user` wants and where; a blank email means the account's own address."""
    subscription, _ = AlertSubscription.objects.update_or_create(
        user=user, defaults={"email": email.strip(), "kinds": list(kinds)}
    )
    return subscription


def alerts_mute(*, scan: Scan | None = None, label: str = "", user: User | None = None) -> AlertMute:
    """Mute alerts about one scan, or about every scan with a label; muting twice keeps one mute."""
    lookup = {"scan": scan} if scan is not None else {"label": label.strip()[:200], "scan": None}
    mute, _ = AlertMute.objects.get_or_create(**lookup, defaults={"created_by": user})
    return mute


def alerts_unmute(*, mute_id: int | None = None, scan: Scan | None = None) -> bool:
    """Remove one mute, named by its id or by its scan; return whether there was one."""
    if (mute_id is None) == (scan is None):
        raise TypeError("alerts_unmute() takes exactly one of mute_id and scan")
    mutes = AlertMute.objects.filter(pk=mute_id) if mute_id is not None else AlertMute.objects.filter(scan=scan)
    deleted, _ = mutes.delete()
    return deleted > 0


def alerts_snooze(*, until: datetime, reason: str = "", user: User | None = None) -> AlertSnooze:
    """Suppress every alert until `until` (a maintenance window)."""
    return AlertSnooze.objects.create(until=until, reason=reason.strip()[:200], created_by=user)


def alerts_end_snooze(*, now: datetime | None = None) -> int:
    """End the snooze in force now (it is kept, with ended_at, as the record of what it held back)."""
    now = now or timezone.now()
    return AlertSnooze.objects.filter(until__gt=now, ended_at__isnull=True).update(ended_at=now)
