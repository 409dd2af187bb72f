"""Test helpers: scans with sensible defaults, and reading the rendered pages the way a user (or htmx) would."""

from __future__ import annotations

import html
import itertools
import re

from django.http import HttpResponse

from scans.models import Scan

_serial = itertools.count(1)
_LISTED_ID = re.compile(r'<a class="mono" href="/scans/([^/"]+)/">')
_CHIP = re.compile(r'class="chip chip-(\w+)"[^>]*>[^<]*<span class="chip-count">(\d+)</span>')
_CURRENT_CHIP = re.compile(r'class="chip chip-(\w+)"[^>]*aria-current="true"')
_TABLE_POLL = re.compile(r'<div hx-get="([^"]+)"[^>]*data-live-poller')
_HEADER_POLL = re.compile(r'<section id="live-header"[^>]*hx-get="([^"]+)"')
_SCAN_POLL = re.compile(r'<section id="scan-live"[^>]*hx-get="([^"]+)"')


def make_scan(tracking_id: str | None = None, **fields) -> Scan:
    """A tracked scan; its tracking ID is unique (and contains no search-worthy text) unless one is given."""
    return Scan.objects.create(tracking_id=tracking_id or f"scan-{next(_serial):05d}", **fields)


def page_text(response: HttpResponse) -> str:
    """The response body with HTML entities decoded, for checking visible wording."""
    return html.unescape(response.content.decode())


def listed_ids(response: HttpResponse) -> list[str]:
    """Tracking IDs of the table's rows, in the order shown."""
    return _LISTED_ID.findall(response.content.decode())


def chip_counts(response: HttpResponse) -> dict[str, int]:
    """The number on each status chip, by chip key (all, pending, ..., stuck)."""
    return {key: int(count) for key, count in _CHIP.findall(response.content.decode())}


def current_chip(response: HttpResponse) -> str | None:
    """The key of the chip marked as the current filter."""
    match = _CURRENT_CHIP.search(response.content.decode())
    return match.group(1) if match else None


def _poll_url(pattern: re.Pattern, response: HttpResponse) -> str:
    match = pattern.search(response.content.decode())
    assert match, "the page has no poller"
    return html.unescape(match.group(1))


def table_poll_url(response: HttpResponse) -> str:
    """The URL the list's live table polls, exactly as htmx would request it."""
    return _poll_url(_TABLE_POLL, response)


def header_poll_url(response: HttpResponse) -> str:
    """The URL the live header polls."""
    return _poll_url(_HEADER_POLL, response)


def scan_poll_url(response: HttpResponse) -> str:
    """The URL a scan page polls while the scan can still change."""
    return _poll_url(_SCAN_POLL, response)


def has_scan_poller(response: HttpResponse) -> bool:
    return _SCAN_POLL.search(response.content.decode()) is not None
