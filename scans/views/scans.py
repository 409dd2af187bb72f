"""Pages of the scans app: the live list and its header, a scan's page, adding scans, and operator actions.

Each operation has its own URL and decorators; every write goes through scans.services (or scans.alerts for
mutes). A URL that answers htmx with a fragment and a browser with the full page varies on HX-Request, so the
browser's cache never hands the fragment to the Back button.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling

from scans import alerts, audit, header_stats, problems, selectors, services
from scans.forms import (
    AddScansConfirmForm,
    AddScansEditForm,
    AddScansForm,
    ArchiveUndoForm,
    BulkLabelForm,
    LabelForm,
    ScanFilterForm,
    ScanSelectionForm,
)
from scans.id_input import IdInput
from scans.models import Scan
from scans.selection import BULK_MAX
from scans.views.common import back_to, operate_required, view_required

# An ID this long is a pasted full tracking ID rather than a fragment to search for.
FULL_ID_MIN_LENGTH = 20
# Parameters that belong to one poll request, never to a link built from it.
_TRANSIENT = ("v",)


@login_required
@view_required
@vary_on_headers("HX-Request")
def scan_list(request: HttpRequest) -> HttpResponse:
    """Every tracked scan, filtered, searched, sorted and paged from the query string; live via htmx."""
    polled = request.GET.get("v")
    if polled and request.htmx and polled == selectors.scans_version():
        return HttpResponse(status=204)  # nothing changed: htmx keeps the table as it is
    if not request.htmx and _has_empty_parameter(request.GET):
        return redirect(_url_with(request.path, _link_query(request.GET)))  # a shared link, cleaned once
    form = ScanFilterForm(request.GET)
    form.is_valid()  # a bad value is reported on the page and ignored; the list is shown either way
    filters = form.filters()
    if not polled and len(filters.q) >= FULL_ID_MIN_LENGTH:
        scan = selectors.scan_by_tracking_id(filters.q)
        if scan:
            return _go(request, reverse("scans:detail", args=[scan.tracking_id]))
    context = _list_context(request, form)
    if request.htmx and not request.htmx.history_restore_request:
        return render(request, "scans/list.html#scan-table", context)
    context |= {
        "sources": selectors.data_sources(),
        "archive_undo": request.session.pop(ARCHIVE_UNDO, None),  # once, right after a bulk archive
        "per_page_choices": selectors.PER_PAGE_CHOICES,
        "sort_choices": selectors.SORT_CHOICES,
        "time_presets": selectors.TIME_RANGE_CHOICES,
    }
    return render(request, "scans/list.html", context)


def _list_context(request: HttpRequest, form: ScanFilterForm) -> dict:
    now = timezone.now()
    filters = form.filters()
    query = _link_query(request.GET)
    listing = selectors.scan_list_for_dashboard(filters=filters, now=now)
    return {
        "filters": filters,
        "problems": form.problems,
        "listing": listing,
        "version": listing.version,
        "chips": selectors.CHIPS,
        "query": query,
        "now": now,
        # "Select all N matching": N as the list counts it (past MAX_LISTED too), and the bulk actions' cap.
        "matching_total": listing.beyond_cap or listing.page.paginator.count,
        "bulk_max": BULK_MAX,
    }


def _has_empty_parameter(params: QueryDict) -> bool:
    return any(not value.strip() for _, values in params.lists() for value in values)


def _link_query(params: QueryDict) -> QueryDict:
    """The list's query string as its links carry it: without the poll token and without empty parameters."""
    query = params.copy()
    for name, values in params.lists():
        kept = [value for value in values if value.strip()]
        if name in _TRANSIENT or not kept:
            del query[name]
        else:
            query.setlist(name, kept)
    return query


def _url_with(path: str, query: QueryDict) -> str:
    return f"{path}?{query.urlencode()}" if query else path


@login_required
@view_required
def scan_list_header(request: HttpRequest) -> HttpResponse:
    """The list's live header (counts, 24 h figures, the poller's health); 204 while nothing changed."""
    now = timezone.now()
    version = header_stats.header_version(now=now)
    if request.GET.get("v") == version:
        return HttpResponse(status=204)
    context = {"stats": header_stats.dashboard_header_stats(now=now), "header_version": version, "now": now}
    return render(request, "scans/list.html#live-header", context)


def _go(request: HttpRequest, url: str) -> HttpResponse:
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _get_scan_or_404(tracking_id: str) -> Scan:
    scan = selectors.scan_by_tracking_id(tracking_id)
    if scan is None:
        raise Http404("No scan with this tracking ID is tracked.")
    return scan


@login_required
@view_required
@vary_on_headers("HX-Request")
def scan_detail(request: HttpRequest, tracking_id: str) -> HttpResponse:
    """Everything about one scan: fields, timeline, error, raw answer; live until the scan is final."""
    scan = _get_scan_or_404(tracking_id)
    version = f"{scan.updated_at.timestamp():.6f}"
    if request.htmx and request.GET.get("v") == version:
        # Unchanged: a final scan will not change again, so tell htmx to stop asking.
        return HttpResponseStopPolling() if scan.is_final or scan.archived_at else HttpResponse(status=204)
    now = timezone.now()
    context = {
        "scan": scan,
        "timeline": selectors.scan_timeline(scan=scan, now=now),
        "version": version,
        "now": now,
        "alerts": selectors.alerts_for_scan(scan=scan),
        "muted": selectors.scan_is_muted(scan=scan),
        "audit_entries": audit.audit_entries_for_scan(scan=scan),
        "acknowledgement": (acknowledgement := problems.scan_acknowledgement(scan=scan)),
        "ack_holds": bool(acknowledgement and acknowledgement.holds_for(scan)),
    }
    template = "scans/detail.html#scan-live" if request.htmx and not request.htmx.boosted else "scans/detail.html"
    return render(request, template, context)


def _done(request: HttpRequest, count: int, done: str, nothing: str) -> None:
    """Tell the operator what an action changed: `done` (with {n}) when it changed something, else `nothing`."""
    if count:
        messages.success(request, done.format(n=count))
    else:
        messages.info(request, nothing)


def _back_to_scan(request: HttpRequest, scan: Scan) -> HttpResponse:
    return redirect(back_to(request, reverse("scans:detail", args=[scan.tracking_id])))


def _act(request: HttpRequest, tracking_id: str, service: Callable[..., int], done: str, nothing: str):
    """Run an operator service on one scan, say what it changed, and go back where the operator was."""
    scan = _get_scan_or_404(tracking_id)
    _done(request, service(scan_ids=[scan.pk], user=request.user), done, nothing)
    return _back_to_scan(request, scan)


@login_required
@operate_required
@require_POST
def scan_refresh(request: HttpRequest, tracking_id: str) -> HttpResponse:
    """Poll one scan at the next worker run instead of at its scheduled check."""
    nothing = "This scan is final or archived: there is nothing to refresh."
    return _act(request, tracking_id, _refresh_now_for(request), "Refresh requested.", nothing)


# Shown when a refresh could not be handed to a worker: the scans are due, the next beat cycle polls them.
QUEUE_UNREACHABLE = "Queued for the next refresh cycle (the task queue is unreachable right now)."


def _refresh_now_for(request: HttpRequest) -> Callable[..., int]:
    """scans_refresh_now as an `_act`/`_bulk` service that also tells the operator when the broker is down."""

    def refresh(*, scan_ids: list[int], user) -> int:
        requested = services.scans_refresh_now(scan_ids=scan_ids, user=user)
        if requested.queue.unreachable:
            messages.warning(request, QUEUE_UNREACHABLE)
        return requested.count

    return refresh


@login_required
@operate_required
@require_POST
def scan_label(request: HttpRequest, tracking_id: str) -> HttpResponse:
    """Set or clear one scan's label."""
    scan = _get_scan_or_404(tracking_id)
    form = LabelForm(request.POST)
    if form.is_valid():
        services.scans_set_label(scan_ids=[scan.pk], label=form.cleaned_data["label"], user=request.user)
        messages.success(request, "Label saved.")
    else:
        messages.error(request, "A label is at most 200 characters.")
    return _back_to_scan(request, scan)


@login_required
@operate_required
@require_POST
def scan_archive(request: HttpRequest, tracking_id: str) -> HttpResponse:
    """Stop tracking one scan: it leaves the default list and is never polled."""
    done = "Archived: this scan is no longer polled."
    return _act(request, tracking_id, services.scans_archive, done, "This scan is archived already.")


@login_required
@operate_required
@require_POST
def scan_restore(request: HttpRequest, tracking_id: str) -> HttpResponse:
    """Track an archived scan again."""
    done = "Restored: this scan is tracked again."
    return _act(request, tracking_id, services.scans_restore, done, "This scan is not archived.")


@login_required
@operate_required
@require_POST
def scan_mute(request: HttpRequest, tracking_id: str) -> HttpResponse:
    """No more alerts about this scan."""
    scan = _get_scan_or_404(tracking_id)
    alerts.alerts_mute(scan=scan, user=request.user)
    messages.success(request, "Alerts about this scan are muted.")
    return _back_to_scan(request, scan)


@login_required
@operate_required
@require_POST
def scan_unmute(request: HttpRequest, tracking_id: str) -> HttpResponse:
    """Alerts about this scan again."""
    scan = _get_scan_or_404(tracking_id)
    alerts.alerts_unmute(scan=scan, user=request.user)
    messages.success(request, "Alerts about this scan are back on.")
    return _back_to_scan(request, scan)


NOTHING_CHANGED = "None of the selected scans changed."
# The session key of the last bulk archive's Undo, shown once on the list the operator goes back to.
ARCHIVE_UNDO = "scans_archive_undo"


def _bulk(
    request: HttpRequest,
    form_class: type[forms.Form],
    action: Callable[..., int],
    done: str,
    *,
    fields: tuple[str, ...] = (),
    nothing: str = NOTHING_CHANGED,
) -> HttpResponse:
    """Apply a service to the form's selection (ticked rows, or every scan matching the list's filters; plus the
    form's `fields`) and go back to the list. `done` "" leaves saying so to the action (archive's Undo)."""
    form = form_class(request.POST)
    if form.is_valid():
        extra = {name: form.cleaned_data[name] for name in fields}
        count = action(scan_ids=form.cleaned_data["selection"].scan_ids, user=request.user, **extra)
        if done or not count:
            _done(request, count, done, nothing)
    else:
        messages.error(request, " ".join(message for errors in form.errors.values() for message in errors))
    return redirect(back_to(request, reverse("scans:list")))


@login_required
@operate_required
@require_POST
def scans_bulk_refresh(request: HttpRequest) -> HttpResponse:
    """Refresh the selected scans now."""
    return _bulk(request, ScanSelectionForm, _refresh_now_for(request), "Refresh requested for {n} scan(s).")


@login_required
@operate_required
@require_POST
def scans_bulk_archive(request: HttpRequest) -> HttpResponse:
    """Archive the selected scans; the list then says how many, with an Undo button (scans_bulk_archive_undo)."""
    now = timezone.now()

    def archive(*, scan_ids, user) -> int:
        count = services.scans_archive(scan_ids=scan_ids, now=now, user=user)
        if count:
            # Every scan this archived carries `now` to the microsecond: Undo restores those, and only those.
            request.session[ARCHIVE_UNDO] = {"archived_at": now.isoformat(), "count": count}
        return count

    return _bulk(request, ScanSelectionForm, archive, "")


@login_required
@operate_required
@require_POST
def scans_bulk_archive_undo(request: HttpRequest) -> HttpResponse:
    """Undo a bulk archive: track again exactly the scans it archived (any re-archived since are left alone)."""
    done = "Undone: {n} scan(s) are tracked again."
    nothing = "Nothing to undo: those scans are no longer archived by that action."
    return _bulk(request, ArchiveUndoForm, services.scans_restore, done, nothing=nothing)


@login_required
@operate_required
@require_POST
def scans_bulk_restore(request: HttpRequest) -> HttpResponse:
    """Track the selected archived scans again."""
    return _bulk(request, ScanSelectionForm, services.scans_restore, "Restored {n} scan(s).")


@login_required
@operate_required
@require_POST
def scans_bulk_label(request: HttpRequest) -> HttpResponse:
    """Give the selected scans one label (never empty: clearing is scans_bulk_clear_label)."""
    return _bulk(request, BulkLabelForm, services.scans_set_label, "Label set on {n} scan(s).", fields=("label",))


@login_required
@operate_required
@require_POST
def scans_bulk_clear_label(request: HttpRequest) -> HttpResponse:
    """Remove the label of the selected scans."""
    clear = functools.partial(services.scans_set_label, label="")
    return _bulk(request, ScanSelectionForm, clear, "Label cleared on {n} scan(s).")


@login_required
@operate_required
def scan_add(request: HttpRequest) -> HttpResponse:
    """Paste IDs or upload a CSV: added at once, or first previewed when there are many or any is rejected."""
    form = AddScansForm(request.POST or None, request.FILES or None)
    if request.method != "POST" or not form.is_valid():
        return render(request, "scans/add.html", {"form": form})
    parsed = form.cleaned_data["parsed"]
    if parsed.needs_preview:
        return render(request, "scans/add.html", {"preview": parsed.preview(), "again": form.resubmission()})
    return _add_and_show(request, parsed=parsed, label=form.cleaned_data["label"])


@login_required
@operate_required
@require_POST
def scan_add_confirm(request: HttpRequest) -> HttpResponse:
    """The preview's "Add" button: add what the preview showed, posted back and checked again."""
    form = AddScansConfirmForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(message for errors in form.errors.values() for message in errors))
        return redirect("scans:add")
    return _add_and_show(request, parsed=form.cleaned_data["parsed"], label=form.cleaned_data["label"])


@login_required
@operate_required
@require_POST
def scan_add_edit(request: HttpRequest) -> HttpResponse:
    """The preview's "Edit" button: the Add form again, holding the text as it was typed."""
    form = AddScansEditForm(request.POST)
    initial = form.cleaned_data if form.is_valid() else {}
    if initial.get("csv_name"):
        messages.info(request, f"Choose {initial['csv_name']} again: a browser cannot send a chosen file back.")
    return render(request, "scans/add.html", {"form": AddScansForm(initial=initial)})


def _add_and_show(request: HttpRequest, *, parsed: IdInput, label: str) -> HttpResponse:
    """Track the accepted IDs, have them refreshed at once, and answer every entry; rejects stay in the box."""
    results = services.scans_track_entries(entries=parsed.entries, label=label, user=request.user)
    queue = services.scans_request_refresh() if results.added else None
    context = {"form": AddScansForm(initial={"ids": parsed.leftover()}), "parsed": parsed, "results": results}
    return render(request, "scans/add.html", context | {"queue": queue})
