"""Values every page needs."""

from django.conf import settings
from django.http import HttpRequest


def dashboard(request: HttpRequest) -> dict:
    """Tell templates whether the dashboard is showing simulator data."""
    return {"demo_mode": settings.DEMO_MODE}
