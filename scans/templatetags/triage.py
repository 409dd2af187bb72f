"""{% problems_open_count %}: the red count of unacknowledged problems in the main navigation."""

from django import template
from django.utils import timezone

from scans.problems import problems_open_count
from scans.selectors import cached_counts

register = template.Library()


@register.simple_tag
def problems_open_count_now() -> int:
    """Unacknowledged failures of the last 24 h plus stuck scans, shared by every page until a scan changes.

    Cached like the list's counts (keyed by scans_version(), which an acknowledgement bumps, and a 10 s bucket
    for the stuck part that moves with the clock alone).
    """
    now = timezone.now()
    return cached_counts("problems-open", (), lambda: {"n": problems_open_count(now=now)}, now=now)["n"]
