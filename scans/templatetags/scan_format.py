"""Template filters for durations and statuses."""

from datetime import timedelta

from django import template

register = template.Library()


@register.filter
def duration(value: timedelta | None) -> str:
    """Render a duration compactly: 45s, 3m 05s, 2h 04m, 3d 4h; an em dash when unknown."""
    if value is None:
        return "—"
    seconds = int(value.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


@register.filter
def status_class(status: str) -> str:
    """CSS modifier for a status badge."""
    return {
        "PENDING": "pending",
        "IN-PROGRESS": "running",
        "SUCCESS": "success",
        "FAILED": "failed",
    }.get(status, "unknown")
