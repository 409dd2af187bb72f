"""Pages about alerts: the outbox, resending, and each user's subscription, mutes and the maintenance snooze."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from scans import alerts, selectors, services
from scans.forms import MuteForm, SnoozeForm, SubscriptionForm
from scans.models import Alert, AlertMute, AlertSubscription
from scans.views.common import back_to, operate_required, view_required


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
    return redirect(back_to(request, reverse("scans:alerts")))


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
