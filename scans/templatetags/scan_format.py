"""Template helpers: times, durations, status styling, stuck detection, sort links and the hourly chart."""

import json
from datetime import UTC, datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.html import format_html

from scans.models import Scan, stuck_limits

register = template.Library()

STATUS_CLASSES = {
    "NEW": "new",
    "PENDING": "pending",
    "IN-PROGRESS": "running",
    "SUCCESS": "success",
    "FAILED": "failed",
    "NOT-FOUND": "not-found",
}


# The one way a time is written on a page: 24-hour, ISO-like date, in the viewer's zone (dashboard/middleware.py).
PAGE_FORMAT = "%Y-%m-%d %H:%M"
PAGE_FORMAT_SECONDS = "%Y-%m-%d %H:%M:%S"


@register.filter
def utc_time(value: datetime | None) -> str:
    """A time as mail and tooltips write it: "2026-11-29 14:05:00 UTC"; empty when there is none."""
    if value is None:
        return ""
    return f"{value.astimezone(UTC):{PAGE_FORMAT_SECONDS}} UTC"


@register.filter
def local_time(value: datetime | None, seconds: bool = False) -> str:
    """A time on the viewer's clock, as every page writes it: "2026-11-29 15:05" (with seconds on request)."""
    if value is None:
        return ""
    return f"{timezone.localtime(value):{PAGE_FORMAT_SECONDS if seconds else PAGE_FORMAT}}"


@register.simple_tag
def moment(value: datetime | None, *, relative: bool = False, seconds: bool = False, empty: str = "—") -> str:
    """A <time> element in the page format, on the viewer's clock, with the UTC time in its tooltip.

    `relative`: the page's script shows "3 min ago" instead, and the tooltip carries the absolute time on both
    clocks. Otherwise the script rewrites the text on the browser's own clock, which is the same one once the `tz`
    cookie is set, and the right one on a first visit before it is. None shows `empty`, muted.
    """
    if value is None:
        return format_html('<span class="muted">{}</span>', empty)
    local = timezone.localtime(value)
    utc = utc_time(value)
    if relative:
        on_local_clock = f"{local:{PAGE_FORMAT_SECONDS}} {local.tzname()}; " if local.utcoffset() else ""
        return format_html(
            '<time datetime="{}" title="{}" data-relative>{}</time>',
            value.isoformat(), on_local_clock + utc, local_time(value, seconds),
        )  # fmt: skip
    return format_html(
        '<time datetime="{}" title="{}" data-exact="{}">{}</time>',
        value.isoformat(), utc, "seconds" if seconds else "", local_time(value, seconds),
    )  # fmt: skip


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


def _compact(value: timedelta) -> str:
    """A limit without its zero parts: 2h, 30m, 1h 30m (the duration filter would say 2h 00m)."""
    parts = [part for part in duration(value).split() if int(part[:-1]) != 0]
    return " ".join(parts) or "0s"


@register.filter
def stuck_reason(scan, now: datetime) -> str:
    """Why a scan is stuck, in a few words: "running 3h 10m, limit 2h" or "pending 45m 00s, limit 30m"."""
    pending_limit, running_limit = stuck_limits()
    if scan.status == Scan.Status.PENDING and scan.submitted_at:
        return f"pending {duration(now - scan.submitted_at)}, limit {_compact(pending_limit)}"
    if scan.status == Scan.Status.IN_PROGRESS and scan.started_at:
        return f"running {duration(now - scan.started_at)}, limit {_compact(running_limit)}"
    return ""


@register.filter
def first_line(text: str | None) -> str:
    """The first non-blank line of a text (an error's headline), stripped."""
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


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
