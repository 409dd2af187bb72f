"""Pages of the scans app: the live list, a scan's page, adding scans, and the operators' actions."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling

from scans import alerts, selectors, services
from scans.forms import (
    AddScansForm,
    BulkActionForm,
    LabelForm,
    parse_filters,
)
from scans.models import AlertMute, Scan
from scans.views.common import back_to, operate_required, view_required

# An ID this long is a pasted full tracking ID rather than a fragment to search for.
FULL_ID_MIN_LENGTH = 20


@login_required
@view_required
def scan_list(request: HttpRequest) -> HttpResponse:
    """Every tracked scan, filtered, searched, sorted and paged from the query string; live via htmx."""
    if request.GET.get("part") == "header":
        return _header(request)
    polled = request.GET.get("v")
    if polled and request.htmx and polled == selectors.scans_version():
        return HttpResponse(status=204)  # nothing changed: htmx keeps the table as it is
    filters, problems = parse_filters(request.GET)
    if not polled and len(filters.q) >= FULL_ID_MIN_LENGTH:
        scan = selectors.scan_by_tracking_id(filters.q)
        if scan:
            return _go(request, reverse("scans:detail", args=[scan.tracking_id]))
    now = timezone.now()
    context = {
        "filters": filters,
        "problems": problems,
        "listing": selectors.scan_list_for_dashboard(filters=filters, now=now),
        "version": selectors.scans_version(),
        "chips": selectors.CHIPS,
        "query": request.GET.copy(),
        "now": now,
    }
    if request.htmx and not request.htmx.history_restore_request:
        return render(request, "scans/list.html#scan-table", context)
    context |= {
        "sources": selectors.data_sources(),
        "per_page_choices": selectors.PER_PAGE_CHOICES,
        "sort_choices": selectors.SORT_CHOICES,
    }
    return render(request, "scans/list.html", context)


def _header(request: HttpRequest) -> HttpResponse:
    version = selectors.header_version()
    if request.GET.get("v") == version:
        return HttpResponse(status=204)
    now = timezone.now()
    context = {"stats": selectors.dashboard_header_stats(now=now), "header_version": version, "now": now}
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
        "muted": AlertMute.objects.filter(scan=scan).exists(),
    }
    template = "scans/detail.html#scan-live" if request.htmx and not request.htmx.boosted else "scans/detail.html"
    return render(request, template, context)


@login_required
@operate_required
@require_POST
def scan_action(request: HttpRequest, tracking_id: str, action: str) -> HttpResponse:
    """Refresh now, archive, restore or relabel one scan."""
    scan = _get_scan_or_404(tracking_id)
    if action in ("mute", "unmute"):
        if action == "mute":
            alerts.scans_mute(scan=scan, user=request.user)
            messages.success(request, "Alerts about this scan are muted.")
        else:
            AlertMute.objects.filter(scan=scan).delete()
            messages.success(request, "Alerts about this scan are back on.")
    elif action == "label":
        form = LabelForm(request.POST)
        if not form.is_valid():
            messages.error(request, "A label is at most 200 characters.")
        else:
            services.scans_set_label(scan_ids=[scan.pk], label=form.cleaned_data["label"])
            messages.success(request, "Label saved.")
    else:
        done = _apply(action, [scan.pk])
        if done:
            messages.success(request, done)
        else:
            messages.info(request, "Nothing to do for this scan.")
    return redirect(back_to(request, reverse("scans:detail", args=[scan.tracking_id])))


def _apply(action: str, scan_ids: list[int], label: str = "") -> str:
    """Run one operator action; return what happened, or "" if nothing changed."""
    if action == "refresh":
        n = services.scans_refresh_now(scan_ids=scan_ids)
        return f"Refresh requested for {n} scan(s)." if n else ""
    if action == "archive":
        n = services.scans_archive(scan_ids=scan_ids)
        return f"Archived {n} scan(s): they are no longer polled." if n else ""
    if action == "restore":
        n = services.scans_restore(scan_ids=scan_ids)
        return f"Restored {n} scan(s)." if n else ""
    if action == "label":
        n = services.scans_set_label(scan_ids=scan_ids, label=label)
        return f"Label set on {n} scan(s)." if n else ""
    raise Http404("Unknown action.")


@login_required
@operate_required
@require_POST
def scan_bulk(request: HttpRequest) -> HttpResponse:
    """Apply one action to the selected rows of the list."""
    form = BulkActionForm(request.POST)
    if form.is_valid():
        ids = list(
            Scan.objects.filter(tracking_id__in=form.cleaned_data["tracking_ids"]).values_list("pk", flat=True)
        )
        done = _apply(form.cleaned_data["action"], ids, form.cleaned_data["label"])
        if done:
            messages.success(request, done)
        else:
            messages.info(request, "None of the selected scans changed.")
    else:
        messages.error(request, " ".join(error for errors in form.errors.values() for error in errors))
    return redirect(back_to(request, reverse("scans:list")))


@login_required
@operate_required
def scan_add(request: HttpRequest) -> HttpResponse:
    """Paste many IDs or upload a CSV; every ID gets its own answer."""
    form = AddScansForm(request.POST or None, request.FILES or None)
    results = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        results = services.scans_track_entries(entries=data["entries"], label=data["label"])
        if results.added:
            services.scans_request_refresh()
        form = AddScansForm()
    return render(request, "scans/add.html", {"form": form, "results": results})
