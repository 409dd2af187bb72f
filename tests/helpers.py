"""Reading the rendered pages the way a user (or htmx) would: through an HTML parser, never by attribute order.

Every helper here checks markup (what the browser shows or htmx requests), so each reads the HTML rather than
`response.context`: a template that dropped a row, a chip or a poller must fail these, even when the view's data
was right.
"""

from __future__ import annotations

import html

from bs4 import BeautifulSoup, Tag
from django.http import HttpResponse
from django.urls import resolve


def page_text(response: HttpResponse) -> str:
    """The response body with HTML entities decoded, for checking visible wording."""
    return html.unescape(response.content.decode())


def parse_html(response: HttpResponse) -> BeautifulSoup:
    """The response body as a parsed document (the stdlib parser, as forgiving as a browser about markup)."""
    return BeautifulSoup(response.content.decode(), "html.parser")


def listed_ids(response: HttpResponse) -> list[str]:
    """Tracking IDs of the table's rows, in the order shown.

    Read from each row's link to its scan page rather than from the link text: the alerts page shortens long
    IDs in the text, the link always carries the whole one.
    """
    links = parse_html(response).select("table tbody a.mono[href]")
    return [resolve(link["href"]).kwargs["tracking_id"] for link in links]


def _chip_key(chip: Tag) -> str:
    return next(name.removeprefix("chip-") for name in chip["class"] if name.startswith("chip-"))


def chip_counts(response: HttpResponse) -> dict[str, int]:
    """The number on each status chip, by chip key (all, pending, ..., stuck); chips with no number are skipped."""
    counts = {}
    for chip in parse_html(response).select("nav.chips a.chip"):
        count = chip.select_one("span.chip-count")
        if count is not None:
            counts[_chip_key(chip)] = int(count.get_text(strip=True))
    return counts


def current_chip(response: HttpResponse) -> str | None:
    """The key of the chip marked as the current filter."""
    chip = parse_html(response).select_one('nav.chips a.chip[aria-current="true"]')
    return _chip_key(chip) if chip is not None else None


def _poll_url(selector: str, response: HttpResponse) -> str:
    poller = parse_html(response).select_one(selector)
    assert poller is not None, f"the page has no poller ({selector})"
    return poller["hx-get"]


_TABLE_POLLER = "div[data-live-poller][hx-get]"
_HEADER_POLLER = "section#live-header[hx-get]"
_SCAN_POLLER = "section#scan-live[hx-get]"


def table_poll_url(response: HttpResponse) -> str:
    """The URL the list's live table polls, exactly as htmx would request it."""
    return _poll_url(_TABLE_POLLER, response)


def header_poll_url(response: HttpResponse) -> str:
    """The URL the live header polls (on the full page: the first request, which loads the header)."""
    return _poll_url(_HEADER_POLLER, response)


def scan_poll_url(response: HttpResponse) -> str:
    """The URL a scan page polls while the scan can still change."""
    return _poll_url(_SCAN_POLLER, response)


def has_scan_poller(response: HttpResponse) -> bool:
    """Whether the scan page still polls (it stops once nothing about the scan can change)."""
    return parse_html(response).select_one(_SCAN_POLLER) is not None


# The header htmx sends with every request it makes: views answer these with a fragment.
HTMX = {"HTTP_HX_REQUEST": "true"}


def get_list(client, query: str = "", **headers) -> HttpResponse:
    """GET the list with a query string ("?status=...") or a whole URL from the page ("/?...&v=...")."""
    response = client.get(query if query.startswith("/") else f"/{query}", **headers)
    assert response.status_code == 200
    return response
