"""Dead-man's switch: ping HEARTBEAT_URL after each successful refresh cycle.

Healthchecks-style monitors (healthchecks.io, Uptime Kuma push monitors, Cronitor) alarm when the pings stop, so
somebody is told even when this whole deployment (web, worker, mail) is down.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import requests
from django.conf import settings

from scans.models import RefreshRun
from scans.poller_health import refresh_succeeded

logger = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT_SECONDS = 5


def heartbeat_ping(*, run: RefreshRun) -> bool:
    """GET HEARTBEAT_URL when `run` succeeded; True when the monitor answered 2xx. Never raises.

    A plain request of its own: no session, no Protecto token. Failures are logged without the URL's path, which
    is the monitor's secret. The timeout bounds connecting and each read; the body is never read.
    """
    url = settings.HEARTBEAT_URL
    if not url or not refresh_succeeded(run):
        return False
    host = urlsplit(url).hostname
    try:
        with requests.get(url, timeout=HEARTBEAT_TIMEOUT_SECONDS, stream=True, allow_redirects=False) as response:
            if 200 <= response.status_code < 300:
                return True
            logger.warning("heartbeat ping to %s answered HTTP %s", host, response.status_code)
    except Exception as exc:  # a monitor's trouble must never fail a refresh cycle
        logger.warning("heartbeat ping to %s failed: %s", host, type(exc).__name__)
    return False
