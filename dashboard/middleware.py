"""The viewer's time zone: pages show times, and forms read them, on the viewer's own clock.

static/scans/timezone.js stores the browser's IANA zone name in the `tz` cookie; this middleware activates it for
the request. Anything that is not a zone this machine knows (a typo, a path, a NUL, an empty value) is ignored and
settings.TIME_ZONE (UTC) is used. The database always stores UTC.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

TIME_ZONE_COOKIE = "tz"
# Longer than any IANA name ("America/Argentina/ComodRivadavia" is 32); a longer cookie is not looked up at all.
MAX_ZONE_NAME = 64


@functools.cache
def _known_zones() -> frozenset[str]:
    # Membership in the IANA list, not ZoneInfo() alone: that also opens files such as "localtime" or "posixrules".
    return frozenset(zoneinfo.available_timezones())


@functools.cache
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def viewer_time_zone(name: str | None) -> zoneinfo.ZoneInfo | None:
    """The zone a `tz` cookie names, or None when it names none this machine knows."""
    if not name or len(name) > MAX_ZONE_NAME or name not in _known_zones():
        return None
    return _zone(name)


class ViewerTimeZoneMiddleware:
    """Activate the time zone of the `tz` cookie for this request; the default zone otherwise."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        zone = viewer_time_zone(request.COOKIES.get(TIME_ZONE_COOKIE))
        if zone is not None:
            timezone.activate(zone)
        try:
            return self.get_response(request)
        finally:
            # The thread serves other requests next: none may inherit this viewer's zone.
            timezone.deactivate()
