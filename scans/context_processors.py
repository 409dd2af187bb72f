"""Values every page needs."""

from django.conf import settings
from django.http import HttpRequest


def dashboard(request: HttpRequest) -> dict:
    """Demo mode and how often live parts poll."""
    return {
        "demo_mode": settings.DEMO_MODE,
        "poll_seconds": settings.DASHBOARD_POLL_SECONDS,
        "header_poll_seconds": max(settings.DASHBOARD_POLL_SECONDS, 15),
    }
