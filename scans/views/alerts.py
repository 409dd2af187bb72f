"""Pages about alerts: the outbox, resending, and each user's subscription, mutes and the maintenance snooze."""

from __future__ import annotations

from datetime import datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from scans import alerts, selectors, services
from scans.forms import AlertFilterForm, MuteForm, SnoozeForm, SubscriptionForm
from scans.models import AlertSnooze
from scans.views.common import back_to, operate_required, view_required


@login_required
@view_required
def alert_list(request: HttpRequest) -> HttpResponse:
    """The outbox: sent, waiting (with the last send error) and suppressed alerts; filter by kind, state, scan."""
    form = AlertFilterForm(request.GET)
    form.is_valid()  # a bad value is reported on the page and ignored
    kind, state, q = form.value("kind"), form.value("state"), form.value("q").strip()
    page = selectors.alert_page(kind=kind, state=state, q=q, page=form.value("page"))
    context = {
        "page": page,
        "kind": kind,
        "state": state,
        "q": q,
        "problems": [message for messages_ in form.errors.values() for message in messages_],
        "kinds": form.fields["kind"].choices,
        "states": form.fields["state"].choices,
        "query": request.GET.copy(),
    }
    return render(request, "scans/alerts.html", context)


@login_required
@operate_required
@require_POST
def alert_resend(request: HttpRequest, alert_id: int) -> HttpResponse:
    """Try a waiting alert again at once instead of after its backoff."""
    if alerts.alert_resend(alert_ids=[alert_id]):
        if services.request_alert_send().unreachable:
            messages.warning(
                request, "The alert is due again; the next cycle sends it (the task queue is unreachable)."
            )
        else:
            messages.success(request, "The alert will be sent again now.")
    else:
        messages.info(request, "Only an alert that is still waiting to be sent can be resent.")
    return redirect(back_to(request, reverse("scans:alerts")))


@login_required
@view_required
@require_safe
def alert_settings(request: HttpRequest) -> HttpResponse:
    """My alert subscription; for operators also mutes and the snooze. Each form posts to its own URL."""
    return _settings_page(request)


def _settings_page(
    request: HttpRequest,
    *,
    subscription_form: SubscriptionForm | None = None,
    mute_form: MuteForm | None = None,
    snooze_form: SnoozeForm | None = None,
) -> HttpResponse:
    """The settings page; a form that was refused comes in bound (answered with 400), the others fresh."""
    now = timezone.now()
    refused = any(form is not None for form in (subscription_form, mute_form, snooze_form))
    if subscription_form is None:
        current = alerts.alert_subscription_for(user=request.user)
        initial = {"email": current.email, "kinds": current.kinds} if current else {}
        subscription_form = SubscriptionForm(initial=initial)
    context = {
        "form": subscription_form,
        "mute_form": mute_form if mute_form is not None else MuteForm(),
        "snooze_form": snooze_form if snooze_form is not None else SnoozeForm(now=now),
        "mutes": alerts.alert_mute_list(),
        # Each open snooze and whether it is in force (else scheduled), by the model's own rule.
        "snoozes": [(snooze, snooze.is_active(now)) for snooze in alerts.alert_snooze_list(now=now)],
        "can_operate": request.user.has_perm("scans.operate_scans"),
    }
    return render(request, "scans/alert_settings.html", context, status=400 if refused else 200)


def _saved(request: HttpRequest, message: str, *, info: bool = False) -> HttpResponse:
    (messages.info if info else messages.success)(request, message)
    return redirect("scans:alert-settings")


@login_required
@view_required
@require_POST
def alert_subscription_update(request: HttpRequest) -> HttpResponse:
    """Save which kinds of alert I get, and where."""
    form = SubscriptionForm(request.POST)
    if not form.is_valid():
        return _settings_page(request, subscription_form=form)
    data = form.cleaned_data
    alerts.alert_subscription_save(user=request.user, email=data["email"], kinds=data["kinds"])
    return _saved(request, "Your alert subscription is saved.")


@login_required
@operate_required
@require_POST
def alert_mute_create(request: HttpRequest) -> HttpResponse:
    """Mute alerts about one scan, or about every scan with a label."""
    form = MuteForm(request.POST)
    if not form.is_valid():
        return _settings_page(request, mute_form=form)
    alerts.alerts_mute(scan=form.cleaned_data["scan"], label=form.cleaned_data["label"], user=request.user)
    return _saved(request, "Muted.")


@login_required
@operate_required
@require_POST
def alert_mute_delete(request: HttpRequest, mute_id: int) -> HttpResponse:
    """Remove a mute: alerts about that scan or label are sent again."""
    if alerts.alerts_unmute(mute_id=mute_id, user=request.user):
        return _saved(request, "Mute removed.")
    return _saved(request, "That mute had already been removed.", info=True)


@login_required
@operate_required
@require_POST
def alert_snooze_start(request: HttpRequest) -> HttpResponse:
    """Snooze every alert now or in a window scheduled ahead, read in the viewer's time zone."""
    now = timezone.now()
    form = SnoozeForm(request.POST, now=now)
    if not form.is_valid():
        return _settings_page(request, snooze_form=form)
    data = form.cleaned_data
    snooze = alerts.alerts_snooze(
        starts_at=data["starts_at"], until=data["until"], reason=data["reason"], user=request.user, now=now
    )
    if snooze.is_scheduled(now):
        return _saved(request, f"Maintenance scheduled {_window(snooze)}: alerts are snoozed then.")
    return _saved(request, f"All alerts are snoozed until {_when(snooze.until)}.")


@login_required
@operate_required
@require_POST
def alert_snooze_end(request: HttpRequest, snooze_id: int) -> HttpResponse:
    """End a snooze now ("End now" on every page's banner), or cancel a window that has not begun."""
    now = timezone.now()
    snooze = alerts.alerts_end_snooze(snooze_id=snooze_id, now=now, user=request.user)
    if snooze is None:
        messages.info(request, "That snooze had already ended.")
    elif snooze.starts_at > now:
        messages.success(request, f"Scheduled maintenance {_window(snooze)} cancelled.")
    else:
        messages.success(request, "Snooze ended: alerts are on again.")
    return redirect(back_to(request, reverse("scans:alert-settings")))


def _when(moment: datetime, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A time on the viewer's clock, with its zone's abbreviation."""
    local = timezone.localtime(moment)
    return f"{local:{fmt}} {local.tzname()}"


def _window(snooze: AlertSnooze) -> str:
    return f"{_when(snooze.starts_at)}\N{EN DASH}{_when(snooze.until)}"
