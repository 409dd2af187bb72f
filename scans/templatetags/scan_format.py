"""Template helpers: durations, status styling, stuck detection, query-string links and the hourly chart."""

import json
from datetime import datetime, timedelta

from django import template
from django.http import QueryDict

register = template.Library()

STATUS_CLASSES = {"PENDING": "pending", "IN-PROGRESS": "running", "SUCCESS": "success", "FAILED": "failed"}
# Parameters that belong to one request only and never to a link.
_TRANSIENT = ("v", "part")


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


@register.simple_tag
def url_with(query: QueryDict, **changes) -> str:
    """The current query string with some parameters changed; a change to None or "" removes it.

    Any change other than the page resets the page to the first.
    """
    params = query.copy()
    for name in _TRANSIENT:
        params.pop(name, None)
    if "page" not in changes:
        params.pop("page", None)
    for name, value in changes.items():
        if value in (None, ""):
            params.pop(name, None)
        else:
            params[name] = str(value)
    encoded = params.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.simple_tag
def sort_link(query: QueryDict, current: str, column: str) -> str:
    """Link for a sortable column header: first click sorts descending, the next ascending."""
    return url_with(query, sort=column if current == f"-{column}" else f"-{column}")


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
