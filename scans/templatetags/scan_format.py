"""Template helpers: durations, status styling, stuck detection, sort links and the hourly chart."""

import json
from datetime import datetime, timedelta

from django import template

register = template.Library()

STATUS_CLASSES = {
    "PENDING": "pending",
    "IN-PROGRESS": "running",
    "SUCCESS": "success",
    "FAILED": "failed",
    "NOT-FOUND": "not-found",
}


@register.filter
def duration(value: timedelta | float | int | None) -> str:
    """Render a duration compactly: 45s, 3m 05s, 2h 04m, 3d 4h; an em dash when unknown."""
    if value is None:
        return "—"
    seconds = int(value.total_seconds() if isinstance(value, timedelta) else value)
    seconds = max(seconds, 0)
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
    return STATUS_CLASSES.get(status, "unknown")


@register.filter
def is_stuck(scan, now: datetime) -> bool:
    """Waiting or running longer than the configured limits, by the API's timestamps."""
    return scan.is_stuck(now)


@register.filter
def pretty_json(value) -> str:
    """Indented JSON for the raw answer (autoescaped by the template like any other text)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


@register.filter
def get_item(mapping: dict, key: str):
    return mapping.get(key)


@register.filter
def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


@register.filter
def toggled_sort(current: str, column: str) -> str:
    """The sort a column header's link asks for: descending first, ascending on the next click."""
    return column if current == f"-{column}" else f"-{column}"


@register.simple_tag
def sort_state(current: str, column: str) -> str:
    """aria-sort value of a column header."""
    if current == f"-{column}":
        return "descending"
    if current == column:
        return "ascending"
    return "none"


@register.inclusion_tag("scans/_hour_chart.html")
def hour_chart(hours) -> dict:
    """A small server-rendered SVG bar chart of successes and failures per hour."""
    width, height, gap = 11, 44, 2
    peak = max((bar.succeeded + bar.failed for bar in hours), default=0) or 1
    bars = []
    for index, bar in enumerate(hours):
        ok_height = round(height * bar.succeeded / peak, 1)
        failed_height = round(height * bar.failed / peak, 1)
        bars.append(
            {
                "x": index * (width + gap),
                "ok_y": height - ok_height,
                "ok_height": ok_height,
                "failed_y": height - ok_height - failed_height,
                "failed_height": failed_height,
                "bar": bar,
            }
        )
    return {"bars": bars, "width": len(hours) * (width + gap), "height": height, "bar_width": width}
