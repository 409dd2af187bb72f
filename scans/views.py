"""Pages of the scans app: the live list, a scan's page, adding scans, and the operators' actions."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling

from scans import alerts, selectors, services
from scans.forms import (
    AddScansForm,
    BulkActionForm,
    LabelForm,
    MuteForm,
    SnoozeForm,
    SubscriptionForm,
    parse_filters,
)
from scans.models import Alert, AlertMute, AlertSubscription, Scan

view_required = permission_required("scans.view_scan", raise_exception=True)
operate_required = permission_required("scans.operate_scans", raise_exception=True)
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


def _back_to(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return default


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
    return redirect(_back_to(request, reverse("scans:detail", args=[scan.tracking_id])))


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
    return redirect(_back_to(request, reverse("scans:list")))


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


@login_required
@view_required
def alert_list(request: HttpRequest) -> HttpResponse:
    """The outbox: sent, waiting (with the last send error) and suppressed alerts; filter by kind, state, scan."""
    kind = request.GET.get("kind", "")
    state = request.GET.get("state", "")
    q = request.GET.get("q", "").replace("\x00", "").strip()[:128]
    page = selectors.alert_page(kind=kind, state=state, q=q, page=request.GET.get("page"))
    context = {
        "page": page,
        "kind": kind if kind in Alert.Kind.values else "",
        "state": state if state in (*Alert.State.values, "failing") else "",
        "q": q,
        "kinds": Alert.Kind.choices,
        "states": [*Alert.State.choices, ("failing", "Failing to send")],
        "snooze": alerts.active_snooze(now=timezone.now()),
        "query": request.GET.copy(),
    }
    return render(request, "scans/alerts.html", context)


@login_required
@operate_required
@require_POST
def alert_resend(request: HttpRequest, alert_id: int) -> HttpResponse:
    """Try a waiting alert again at once instead of after its backoff."""
    if alerts.alert_resend(alert_ids=[alert_id]):
        services.request_alert_send()
        messages.success(request, "The alert will be sent again now.")
    else:
        messages.info(request, "Only an alert that is still waiting to be sent can be resent.")
    return redirect(_back_to(request, reverse("scans:alerts")))


@login_required
@view_required
def alert_settings(request: HttpRequest) -> HttpResponse:
    """My alert subscription; for operators also mutes and the maintenance snooze."""
    now = timezone.now()
    subscription = AlertSubscription.objects.filter(user=request.user).first()
    form = SubscriptionForm(
        request.POST if request.POST.get("form") == "subscription" else None,
        initial={
            "email": subscription.email if subscription else "",
            "kinds": subscription.kinds if subscription else [],
        },
    )
    mute_form = MuteForm(request.POST if request.POST.get("form") == "mute" else None)
    snooze_form = SnoozeForm(request.POST if request.POST.get("form") == "snooze" else None, now=now)
    if request.method == "POST":
        done = _alert_settings_post(request, form, mute_form, snooze_form, now)
        if done:
            messages.success(request, done)
            return redirect("scans:alert-settings")
    context = {
        "form": form,
        "mute_form": mute_form,
        "snooze_form": snooze_form,
        "mutes": AlertMute.objects.select_related("scan", "created_by").order_by("-created_at"),
        "snooze": alerts.active_snooze(now=now),
        "can_operate": request.user.has_perm("scans.operate_scans"),
    }
    return render(request, "scans/alert_settings.html", context)


def _alert_settings_post(request, form, mute_form, snooze_form, now) -> str:
    """Apply one of the settings forms; return the message on success, "" to show the form's errors."""
    which = request.POST.get("form")
    if which == "subscription" and form.is_valid():
        AlertSubscription.objects.update_or_create(
            user=request.user, defaults={"email": form.cleaned_data["email"], "kinds": form.cleaned_data["kinds"]}
        )
        return "Your alert subscription is saved."
    if which in ("mute", "unmute", "snooze", "end-snooze") and not request.user.has_perm("scans.operate_scans"):
        raise PermissionDenied
    if which == "mute" and mute_form.is_valid():
        data = mute_form.cleaned_data
        alerts.scans_mute(scan=data.get("scan"), label=data["label"], user=request.user)
        return "Muted."
    if which == "unmute":
        AlertMute.objects.filter(pk=request.POST.get("mute_id") or 0).delete()
        return "Mute removed."
    if which == "snooze" and snooze_form.is_valid():
        data = snooze_form.cleaned_data
        alerts.alerts_snooze(until=data["until"], reason=data["reason"], user=request.user)
        return f"All alerts are snoozed until {data['until']:%Y-%m-%d %H:%M} UTC."
    if which == "end-snooze":
        alerts.alerts_end_snooze(now=now)
        return "Snooze ended: alerts are on again."
    return ""


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and compose: 200 when the database answers, 503 when it does not."""
    try:
        run = selectors.dashboard_last_run()
    except DatabaseError:
        return JsonResponse({"database": "unreachable"}, status=503)
    last = run.started_at.isoformat() if run else None
    return JsonResponse({"database": "ok", "last_refresh": last, "last_outcome": run.outcome if run else None})
