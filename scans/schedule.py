"""When a scan is checked next: every interval while it is new or has just changed, less often the longer it stays
the same (adaptive polling).

A scan that has sat IN-PROGRESS unchanged for an hour will not change in the next 30 s more often than one that
started a minute ago; polling both at the same rate spends most API calls on news nobody gets. The delay doubles
for every QUIET_STEP without a change, from REFRESH_INTERVAL_SECONDS up to REFRESH_MAX_INTERVAL_SECONDS. Any
change starts it over, and "refresh now" always wins (it sets next_check_at to now, whatever this says).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings

# How long a scan must stay unchanged before its checks slow down by one more doubling.
QUIET_STEP = timedelta(minutes=5)


def next_check_delay(*, last_change: datetime, now: datetime) -> timedelta:
    """The wait before the next check of an active scan whose visible state last changed at `last_change`."""
    base = timedelta(seconds=settings.REFRESH_INTERVAL_SECONDS)
    cap = max(base, timedelta(seconds=settings.REFRESH_MAX_INTERVAL_SECONDS))
    quiet_steps = max(int((now - last_change) / QUIET_STEP), 0)
    # 2**20 intervals is years: anything past that is the cap anyway, and the exponent stays small.
    return min(base * 2 ** min(quiet_steps, 20), cap)
