"""Alerts: send the outbox, and the services behind the alert settings page.

Detection (what must be alerted, written to the outbox first) is in scans.alert_detection; this module sends what
is due. Senders claim rows with a conditional update, so two senders (Celery workers, the watchdog) never mail one
alert. Also subscriptions, mutes and the maintenance snooze, which decide who is told and what is held back.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.mail import get_connection
from django.db.models import F
from django.utils import timezone

from scans.alert_detection import (
    DetectResult,
    Suppression,
    alert_recipients,
    alerts_detect,
    poller_alerts_detect,
)
from scans.audit import audit_record
from scans.emails import message_for
from scans.models import Alert, AlertMute, AlertSnooze, AlertSubscription, AuditEntry, Scan

if TYPE_CHECKING:
    from django.contrib.auth.models import User

__all__ = ["DetectResult", "alert_recipients", "alerts_detect", "poller_alerts_detect"]

logger = logging.getLogger(__name__)

# A claimed alert whose sender died is tried again after this long.
SEND_LEASE = timedelta(minutes=10)
FIRST_RETRY_SECONDS = 30
# Capped low: an alert must not wait half an hour after the mail server is back (a success also pulls all forward).
MAX_RETRY_SECONDS = 5 * 60


@dataclass
class SendResult:
    sent: list[Alert] = field(default_factory=list)
    failed: list[tuple[Alert, str]] = field(default_factory=list)
    suppressed: list[Alert] = field(default_factory=list)


def _retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0), MAX_RETRY_SECONDS))


def alerts_send_due(*, now: datetime | None = None, limit: int = 200) -> SendResult:
    """Mail the pending alerts that are due; a failed send waits with backoff and is tried again later.

    A send that succeeds shows the mail server is back: every alert still waiting out its backoff is due at once
    and goes out in a second pass of this same call.
    """
    now = now or timezone.now()
    result = SendResult()
    for _ in range(2):
        claim = _claim_due(now=now, limit=limit)
        if claim is None:
            break
        token, claimed = claim
        to_send = _drop_suppressed(claimed, token=token, now=now, result=result)
        sent_before = len(result.sent)
        if to_send:
            _mail(to_send, token=token, now=now, result=result)
        if len(result.sent) == sent_before or not _pull_forward(now=now):
            break
    return result


def _pull_forward(*, now: datetime) -> int:
    """Make every pending alert waiting out a backoff due now; return how many.

    Alerts another sender has claimed (a claim token set) are left alone: moving them would let a second sender
    claim and mail them again.
    """
    waiting = Alert.objects.filter(state=Alert.State.PENDING, claim_token="", next_attempt_at__gt=now)
    return waiting.update(next_attempt_at=now)


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
    suppression = Suppression(now)
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


def alerts_watch(*, now: datetime | None = None) -> tuple[DetectResult, SendResult]:
    """Detect a stopped or resumed poller, then send what is due: `manage.py watchdog`, without Celery."""
    now = now or timezone.now()
    return poller_alerts_detect(now=now), alerts_send_due(now=now)


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
    mute, created = AlertMute.objects.get_or_create(**lookup, defaults={"created_by": user})
    if created:
        _audit_mute(user=user, action=AuditEntry.Action.MUTE, mute=mute)
    return mute


def _audit_mute(*, user: User | None, action: str, mute: AlertMute) -> None:
    if mute.scan_id is not None:
        audit_record(user=user, action=action, scans=Scan.objects.filter(pk=mute.scan_id))
    else:
        audit_record(user=user, action=action, detail=f"label: {mute.label}")


def alerts_unmute(*, mute_id: int | None = None, scan: Scan | None = None, user: User | None = None) -> bool:
    """Remove one mute, named by its id or by its scan; return whether there was one."""
    if (mute_id is None) == (scan is None):
        raise TypeError("alerts_unmute() takes exactly one of mute_id and scan")
    mutes = AlertMute.objects.filter(pk=mute_id) if mute_id is not None else AlertMute.objects.filter(scan=scan)
    removed = list(mutes)
    deleted, _ = mutes.delete()
    for mute in removed[:deleted]:
        _audit_mute(user=user, action=AuditEntry.Action.UNMUTE, mute=mute)
    return deleted > 0


def alerts_snooze(
    *,
    until: datetime,
    starts_at: datetime | None = None,
    reason: str = "",
    user: User | None = None,
    now: datetime | None = None,
) -> AlertSnooze:
    """Suppress every alert from `starts_at` (default: now) until `until`: a maintenance window.

    A start in the past is now: a window cannot hold back what was already sent.
    """
    now = now or timezone.now()
    starts_at = max(starts_at or now, now)
    if until <= starts_at:
        raise ValueError("a snooze must end after it starts")
    snooze = AlertSnooze.objects.create(
        starts_at=starts_at, until=until, reason=reason.strip()[:200], created_by=user, created_at=now
    )
    detail = f"{_utc(starts_at)} to {_utc(until)}" + (f"; {snooze.reason}" if snooze.reason else "")
    audit_record(user=user, action=AuditEntry.Action.SNOOZE, detail=detail, now=now)
    return snooze


def _utc(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def alerts_end_snooze(
    *, snooze_id: int, now: datetime | None = None, user: User | None = None
) -> AlertSnooze | None:
    """End one snooze now, or cancel it if it has not begun; None if it was already over or ended.

    The row is kept, with ended_at, as the record of what it held back. Compare-and-set: of two clicks on
    "End now" one ends it, the other is told it had already ended.
    """
    now = now or timezone.now()
    if not AlertSnooze.objects.open(now).filter(pk=snooze_id).update(ended_at=now):
        return None
    snooze = AlertSnooze.objects.get(pk=snooze_id)
    detail = f"snooze until {_utc(snooze.until)}" + (f"; {snooze.reason}" if snooze.reason else "")
    audit_record(user=user, action=AuditEntry.Action.END_SNOOZE, detail=detail, now=now)
    return snooze


def alert_snooze_list(*, now: datetime) -> list[AlertSnooze]:
    """The snoozes in force or still to come, soonest first, with their authors (the settings page's list)."""
    return list(AlertSnooze.objects.open(now).select_related("created_by").order_by("starts_at", "pk"))
