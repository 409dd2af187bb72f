"""Values every page needs."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property

from scans.alerts import alert_snooze_list
from scans.models import AlertSnooze


class Maintenance:
    """What the maintenance banner shows: the snooze in force and the next window scheduled.

    Read on first use, so an htmx fragment (the live table polls every few seconds) or a page without the banner
    costs no query; a page with it costs one, on the `snooze_open_until` index, however many snoozes have ever
    been made (only those not yet over are read).
    """

    def __init__(self, now: datetime) -> None:
        self.now = now

    @cached_property
    def _open(self) -> list[AlertSnooze]:
        return alert_snooze_list(now=self.now)

    @cached_property
    def active(self) -> AlertSnooze | None:
        """The snooze in force (the latest-ending one when they overlap, as alert detection picks it)."""
        in_force = [snooze for snooze in self._open if snooze.is_active(self.now)]
        return max(in_force, key=lambda snooze: (snooze.until, snooze.pk), default=None)

    @cached_property
    def upcoming(self) -> AlertSnooze | None:
        """The next window scheduled to begin."""
        return next((snooze for snooze in self._open if snooze.is_scheduled(self.now)), None)

    @property
    def until_text(self) -> str:
        """When the snooze in force ends, short enough for one line on a phone: "today 20:00 CET"."""
        return f"{self._day_and_time(self.active.until)} {timezone.localtime(self.active.until):%Z}"

    @property
    def upcoming_text(self) -> str:
        """The next window: "Tue 1 Dec 16:00 to 19:00 CET" (an en dash between), both days if it spans midnight."""
        start, end = timezone.localtime(self.upcoming.starts_at), timezone.localtime(self.upcoming.until)
        shown_end = f"{end:%H:%M}" if end.date() == start.date() else self._day_and_time(end)
        return f"{self._day_and_time(start)}\N{EN DASH}{shown_end} {end:%Z}"

    def _day_and_time(self, moment: datetime) -> str:
        """A time on the viewer's clock, its day named the short way: today, tomorrow, or "Tue 1 Dec"."""
        local, today = timezone.localtime(moment), timezone.localdate(self.now)
        days = (local.date() - today).days
        day = {0: "today", 1: "tomorrow"}.get(days) or f"{local:%a} {local.day} {local:%b}"
        return f"{day} {local:%H:%M}"


def dashboard(request: HttpRequest) -> dict:
    """Demo mode, how often live parts poll, and the maintenance banner (read only if the page shows it)."""
    return {
        "demo_mode": settings.DEMO_MODE,
        "poll_seconds": settings.DASHBOARD_POLL_SECONDS,
        "header_poll_seconds": max(settings.DASHBOARD_POLL_SECONDS, 15),
        "maintenance": Maintenance(timezone.now()),
    }
