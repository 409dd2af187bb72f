"""python manage.py watchdog: tell ops when refreshes stop, without Celery; and compose's beat health check.

A dead worker, beat or broker cannot send the alert about itself, so this small process (its own compose service)
checks the poller's freshness every WATCHDOG_INTERVAL_SECONDS and mails what is due straight over SMTP. It uses
the same outbox as the Celery sender: alerts are claimed before they are sent, so both running never mail twice.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, close_old_connections, connections
from django.utils import timezone

from scans.alerts import alerts_watch

logger = logging.getLogger(__name__)

# Celery beat writes its schedule file at most this often (celery.beat.Scheduler.sync_every), after a tick that
# sent a task; a file older than that plus two intervals and a minute's slack means beat is hung or dead.
BEAT_SYNC_SECONDS = 3 * 60


def beat_schedule_age(*, now: float | None = None) -> float | None:
    """Seconds since Celery beat last wrote its schedule file (any dbm suffix); None when there is none."""
    path = Path(settings.CELERY_BEAT_SCHEDULE_FILENAME)
    mtimes = [found.stat().st_mtime for found in path.parent.glob(f"{path.name}*") if found.is_file()]
    if not mtimes:
        return None
    return (now or time.time()) - max(mtimes)


def beat_stale_after_seconds() -> int:
    """How old the schedule file may be while beat is alive."""
    return BEAT_SYNC_SECONDS + 2 * settings.REFRESH_INTERVAL_SECONDS + 60


class Command(BaseCommand):
    help = "Alert when refreshes stop (and when they resume) and send due alerts, every WATCHDOG_INTERVAL_SECONDS."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="Check and send once, then exit.")
        parser.add_argument(
            "--check-beat",
            action="store_true",
            help="Only check that Celery beat wrote its schedule file recently; exit 1 if not (a health check).",
        )

    def handle(self, *args, once: bool = False, check_beat: bool = False, **options) -> None:
        if check_beat:
            self._check_beat()
            return
        self.stdout.write(f"watchdog: checking every {settings.WATCHDOG_INTERVAL_SECONDS} s")
        while True:
            self._watch_once()
            if once:
                return
            time.sleep(settings.WATCHDOG_INTERVAL_SECONDS)
            # Between passes, as Django does between requests: a connection too old or broken is replaced.
            close_old_connections()

    def _watch_once(self) -> None:
        """One check and send; a database that is down is reported and tried again at the next interval."""
        try:
            detected, sent = alerts_watch(now=timezone.now())
        except DatabaseError as exc:
            self.stderr.write(f"watchdog: database unavailable ({type(exc).__name__}: {exc}); retrying")
            connections.close_all()  # a broken connection must not be reused at the next pass
            return
        except Exception:  # a bug in one pass must not end the only sender that works without Celery
            logger.exception("watchdog pass failed")
            return
        for kind, count in detected.created.items():
            self.stdout.write(f"watchdog: new {kind} alert ({count})")
        for alert in sent.sent:
            self.stdout.write(f"watchdog: sent {alert.subject}")
        for alert, error in sent.failed:
            self.stderr.write(f"watchdog: not sent {alert.subject}: {error} (will retry)")

    def _check_beat(self) -> None:
        age = beat_schedule_age()
        limit = beat_stale_after_seconds()
        if age is None:
            raise CommandError(f"no beat schedule file at {settings.CELERY_BEAT_SCHEDULE_FILENAME}")
        if age > limit:
            raise CommandError(f"beat schedule file not written for {age:.0f} s (limit {limit} s): beat is stuck")
        self.stdout.write(f"beat ok: schedule written {age:.0f} s ago")
