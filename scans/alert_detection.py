"""Alert detection: find what ops must hear about and write it to the outbox (scans.alerts sends it).

Every alert is a database row before anything is mailed. Its identity is in columns (scan or refresh run, kind,
and the snooze that held it back) under unique constraints, so detection is idempotent and two detections at once
write each alert once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from scans.emails import alerts_url, render_email, scan_url
from scans.models import Alert, AlertMute, AlertSnooze, AlertSubscription, RefreshRun, Scan
from scans.poller_health import PollerHealth, human_age, poller_health

# A failure older than this when first seen (e.g. an old ID just registered) is not news.
FAILED_NEWS_WINDOW = timedelta(hours=24)
MAX_PER_KIND_PER_CYCLE = 5000
# New scan alerts are built and written this many at a time, so a flood (thousands of failures seen at once)
# holds one chunk of rendered mails in a worker's memory, not all of them.
DETECT_CHUNK = 500
# A digest mail lists this many of its alerts, then says how many more the alerts page has.
DIGEST_MAX_LISTED = 200
SCAN_KINDS = (Alert.Kind.FAILED, Alert.Kind.NOT_FOUND, Alert.Kind.STUCK, Alert.Kind.STUCK_RESOLVED)
# Cycles that count toward an API outage: errors, a refused token, and answers too incomplete to trust.
UNHEALTHY = (RefreshRun.Outcome.FAILED, RefreshRun.Outcome.AUTH_REFUSED, RefreshRun.Outcome.DEGRADED)
# Cycles that say nothing about the API's health: still going, nothing was due, or cut short by a dying worker.
UNFINISHED = (RefreshRun.Outcome.RUNNING, RefreshRun.Outcome.IDLE, RefreshRun.Outcome.ABANDONED)
# States of an alert someone was (or will be) told about; a follow-up (resolved, recovered) needs one of these.
ANNOUNCED = (Alert.State.PENDING, Alert.State.SENT, Alert.State.IN_DIGEST)


@dataclass
class DetectResult:
    created: dict[str, int] = field(default_factory=dict)
    suppressed: int = 0
    digests: int = 0


def alert_recipients(*, kind: str) -> list[str]:
    """ALERT_EMAILS plus every user subscribed to this kind, each address once."""
    addresses = dict.fromkeys(address.lower() for address in settings.ALERT_EMAILS)
    for subscription in AlertSubscription.objects.select_related("user").filter(user__is_active=True):
        if kind in subscription.kinds and subscription.address:
            addresses.setdefault(subscription.address.lower(), None)
    return list(addresses)


def active_snooze(*, now: datetime) -> AlertSnooze | None:
    """The maintenance snooze in force at `now`, if any (the latest-ending one when they overlap).

    A window scheduled for later holds nothing back yet: AlertSnooze.objects.active() is the one rule.
    """
    return AlertSnooze.objects.active(now).order_by("-until", "-pk").first()


class Suppression:
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
    name = scan.label or scan.tracking_id
    return {"scan": scan, "scan_url": scan_url(scan), "now": now, "name": name,
            "not_found_hours": f"{settings.NOT_FOUND_AFTER_HOURS:g}"}  # fmt: skip


def _candidates(kind: str, now: datetime, suppression: Suppression):
    tracked = Scan.objects.tracked()
    if kind == Alert.Kind.FAILED:
        # By the API's end time where it gave one: a scan tracked today that failed last week changes status in
        # our records now (last_changed_at), but it is old news.
        failed_at = Coalesce("ended_at", "last_changed_at")
        scans = tracked.alias(failed_at=failed_at).filter(
            status=Scan.Status.FAILED, failed_at__gte=now - FAILED_NEWS_WINDOW
        )
    elif kind == Alert.Kind.NOT_FOUND:
        scans = tracked.filter(status=Scan.Status.NOT_FOUND)
    elif kind == Alert.Kind.STUCK:
        scans = tracked.stuck(now)
    else:  # resolved: a scan we told someone was stuck has finished (a muted or snoozed stuck alert was not told)
        scans = Scan.objects.finished().filter(alerts__kind=Alert.Kind.STUCK, alerts__state__in=ANNOUNCED)
    already = Alert.objects.filter(scan=OuterRef("pk"), kind=kind, is_digest=False)
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
    suppression: Suppression,
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


def _store(
    chunks: Iterable[list[Alert]],
    *,
    kind: str,
    to_send: int,
    recipients: list[str],
    now: datetime,
    result: DetectResult,
) -> None:
    """Write the new alerts, chunk by chunk; more than ALERT_DIGEST_THRESHOLD to send (`to_send`: how many of
    them will be PENDING) become one digest instead of a flood."""
    # One transaction: no sender sees the digest before it is known to hold at least one alert.
    with transaction.atomic():
        digest = None
        if to_send > settings.ALERT_DIGEST_THRESHOLD:
            digest = Alert.objects.create(
                kind=kind, is_digest=True, recipients=recipients, created_at=now, next_attempt_at=now
            )
        for alerts in chunks:
            for alert in alerts:
                # Due at `now`, so the send that follows this detection in the same run mails it at once.
                alert.created_at = alert.next_attempt_at = now
                if digest is not None and alert.state == Alert.State.PENDING:
                    alert.state, alert.digest = Alert.State.IN_DIGEST, digest
            # ignore_conflicts: a concurrent detection that wrote the same alert first wins (the unique
            # constraints on its identity), and nothing is doubled.
            Alert.objects.bulk_create(alerts, ignore_conflicts=True, batch_size=500)
            result.created[kind] = result.created.get(kind, 0) + len(alerts)
            result.suppressed += sum(alert.state == Alert.State.SUPPRESSED for alert in alerts)
        if digest is not None:
            _finish_digest(digest, kind=kind, now=now, result=result)


def _finish_digest(digest: Alert, *, kind: str, now: datetime, result: DetectResult) -> None:
    """Render the digest over the alerts this detection wrote (the winner of a race mails the others)."""
    members = digest.members.select_related("scan").defer("body_text", "body_html").order_by("pk")
    count = members.count()
    if not count:
        digest.delete()
        return
    listed = list(members[:DIGEST_MAX_LISTED])
    digest.subject, digest.body_text, digest.body_html = render_email(
        "digest",
        {"kind": kind, "kind_label": Alert.Kind(kind).label, "alerts": listed, "count": count,
         "more": count - len(listed), "alerts_url": alerts_url(), "now": now},
    )  # fmt: skip
    digest.save(update_fields=["subject", "body_text", "body_html"])
    result.digests += 1


def _candidate_rows(kind: str, now: datetime, suppression: Suppression) -> list[tuple[int, str]]:
    """(pk, label) of each scan to alert about, read with hash joins on PostgreSQL.

    Right after a bulk registration, before the tables are analyzed, PostgreSQL takes the new scans to be a few
    and plans "not alerted yet" as a walk over every alert of the kind for every candidate scan: 66 s for
    100,000 stuck scans and 5,000 stuck alerts. A hash join costs one pass over each side whatever the estimates.
    """
    rows = _candidates(kind, now, suppression).values_list("pk", "label")
    if connection.vendor != "postgresql":
        return list(rows)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_nestloop = off")
        return list(rows)


def _detect_scan_alerts(now: datetime, suppression: Suppression, result: DetectResult) -> None:
    for kind in SCAN_KINDS:
        found = _candidate_rows(kind, now, suppression)
        if not found:
            continue
        recipients = alert_recipients(kind=kind)
        reasons = [suppression.reason(Scan(pk=pk, label=label)) for pk, label in found]
        to_send = sum(not reason for reason in reasons) if recipients else 0
        chunks = _scan_alert_chunks(kind, [pk for pk, _ in found], recipients, now, suppression)
        _store(chunks, kind=kind, to_send=to_send, recipients=recipients, now=now, result=result)


def _scan_alert_chunks(
    kind: str, ids: list[int], recipients: list[str], now: datetime, suppression: Suppression
) -> Iterator[list[Alert]]:
    """The new alerts about these scans, DETECT_CHUNK at a time, each chunk's scans loaded when it is built."""
    for start in range(0, len(ids), DETECT_CHUNK):
        scans = Scan.objects.filter(pk__in=ids[start : start + DETECT_CHUNK]).order_by("pk")
        yield [
            _new_alert(
                kind=kind,
                scan=scan,
                suppression=suppression,
                context=_scan_context(scan, now),
                recipients=recipients,
            )
            for scan in scans
        ]


def _detect_api_alerts(now: datetime, suppression: Suppression, result: DetectResult) -> None:
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
        to_send = int(alert.state == Alert.State.PENDING)
        _store([[alert]], kind=alert.kind, to_send=to_send, recipients=alert.recipients, now=now, result=result)


def _outage_alert(
    finished: QuerySet[RefreshRun], latest: RefreshRun, now: datetime, suppression: Suppression
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


def _recovery_alert(latest: RefreshRun, now: datetime, suppression: Suppression) -> Alert | None:
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


def poller_alerts_detect(*, now: datetime | None = None, result: DetectResult | None = None) -> DetectResult:
    """Write the alert for a poller whose cycles stopped (once per stale episode), or for its recovery.

    Needs no Celery worker: `manage.py watchdog` runs it, because a dead worker or broker cannot tell anyone.
    A poller whose cycles run but fail is not alerted here: the API alerts (down, token refused) say that.
    """
    now = now or timezone.now()
    result = result or DetectResult()
    suppression = Suppression(now)
    health = poller_health(now=now)
    if health.cycles_stopped:
        alert = _stale_alert(health, now, suppression)
    else:
        alert = _resumed_alert(health, now, suppression)
    if alert is not None:
        to_send = int(alert.state == Alert.State.PENDING)
        _store([[alert]], kind=alert.kind, to_send=to_send, recipients=alert.recipients, now=now, result=result)
    return result


def _stale_alert(health: PollerHealth, now: datetime, suppression: Suppression) -> Alert | None:
    """The alert for this stale episode, unless it was written already.

    The episode is known by the latest refresh run started when staleness began: later runs (a cycle that hangs
    at once) do not change it, and the next episode, after a success, has a later one.
    """
    episode = RefreshRun.objects.filter(started_at__lte=health.stale_began_at).first()
    if episode is None:
        return None  # no refresh ever ran: nothing to name the episode by (healthz and the header still say it)
    kind = Alert.Kind.POLLER_STALE
    if Alert.objects.filter(suppression.still_counts(), kind=kind, outage=episode).exists():
        return None
    context = {"health": health, "stale_after_text": human_age(health.stale_after), "alerts_url": alerts_url(),
               "intervals": settings.STALE_AFTER_INTERVALS, "now": now}  # fmt: skip
    recipients = alert_recipients(kind=kind)
    return _new_alert(kind=kind, outage=episode, suppression=suppression, context=context, recipients=recipients)


def _resumed_alert(health: PollerHealth, now: datetime, suppression: Suppression) -> Alert | None:
    """One notice per stale episode somebody was told about, once a refresh succeeded after that alert."""
    if health.stale or health.last_success_at is None:
        return None
    stale = Alert.objects.filter(kind=Alert.Kind.POLLER_STALE, state__in=ANNOUNCED).first()
    # A success is needed, not just an end to staleness: with no scans left to poll nothing is stale either.
    if stale is None or stale.outage_id is None or health.last_success_at < stale.created_at:
        return None
    kind = Alert.Kind.POLLER_RECOVERED
    if Alert.objects.filter(kind=kind, outage_id=stale.outage_id).exists():
        return None
    context = {"health": health, "stale": stale, "alerts_url": alerts_url(), "now": now}
    recipients = alert_recipients(kind=kind)
    return _new_alert(
        kind=kind, outage=stale.outage, suppression=suppression, context=context, recipients=recipients
    )


def alerts_detect(*, now: datetime | None = None) -> DetectResult:
    """Write every alert not yet written: about scans, the API and the poller.

    Scans failed, unknown to Protecto (not found), stuck or finished after being stuck; the API down, refusing the
    token or recovered; the poller's cycles stopped or resumed.
    """
    now = now or timezone.now()
    result = DetectResult()
    suppression = Suppression(now)
    _detect_scan_alerts(now, suppression, result)
    _detect_api_alerts(now, suppression, result)
    poller_alerts_detect(now=now, result=result)
    return result
