"""Triage pages: the Problems view, acknowledging a scan or a whole group, and the audit log.

Viewers see Problems and the audit log; only operators acknowledge (each POST has its own URL and decorators).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_POST, require_safe

from scans import audit, problems, selectors, triage
from scans.triage_forms import AcknowledgeForm, AuditFilterForm, GroupAcknowledgeForm, ProblemsFilterForm
from scans.views.common import back_to, operate_required, view_required


@login_required
@view_required
@require_safe
def problem_list(request: HttpRequest) -> HttpResponse:
    """Failed (in the window) and stuck scans not acknowledged, grouped by normalised error."""
    form = ProblemsFilterForm(request.GET)
    form.is_valid()  # a bad window is reported and the default used
    now = timezone.now()
    report = problems.problem_report(since=now - form.window_length(), now=now)
    context = {
        "report": report,
        "window": form.window_name(),
        "windows": problems.WINDOW_CHOICES,
        "problems": form.problems,
        "now": now,
    }
    return render(request, "scans/problems.html", context)


def _problems_url(window: str) -> str:
    return f"{reverse('scans:problems')}?{urlencode({'window': window})}"


@login_required
@operate_required
@require_POST
def problem_group_acknowledge(request: HttpRequest) -> HttpResponse:
    """Acknowledge every scan of one group, as the Problems view counted it."""
    form = GroupAcknowledgeForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(message for errors in form.errors.values() for message in errors))
        return redirect("scans:problems")
    data, now = form.cleaned_data, timezone.now()
    count = triage.problem_group_acknowledge(
        key=data["key"],
        since=now - problems.WINDOWS[data["window"]],
        note=data["note"],
        user=request.user,
        now=now,
    )
    if count:
        messages.success(request, f"Acknowledged {count} scan(s): they leave this view until they fail again.")
    else:
        messages.info(request, "Nothing left to acknowledge in that group.")
    return redirect(_problems_url(data["window"]))


@login_required
@operate_required
@require_POST
def scan_acknowledge(request: HttpRequest, tracking_id: str) -> HttpResponse:
    """Acknowledge one failed or stuck scan, with a note."""
    scan = selectors.scan_by_tracking_id(tracking_id)
    if scan is None:
        raise Http404("No scan with this tracking ID is tracked.")
    form = AcknowledgeForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"A note is at most {form.fields['note'].max_length} characters.")
    elif triage.problems_acknowledge(
        scan_ids=[scan.pk], note=form.cleaned_data["note"], user=request.user, now=timezone.now()
    ):
        messages.success(request, "Acknowledged: this scan leaves the Problems view until it fails again.")
    else:
        messages.info(request, "Only a failed or stuck scan can be acknowledged.")
    return redirect(back_to(request, reverse("scans:detail", args=[scan.tracking_id])))


@login_required
@view_required
@require_safe
def audit_log(request: HttpRequest) -> HttpResponse:
    """Every operator action, newest first, filtered by action, who, tracking ID and period."""
    form = AuditFilterForm(request.GET)
    form.is_valid()  # bad values are reported and ignored
    filters = form.filters()
    page = audit.audit_page(filters=filters, now=timezone.now())
    query = request.GET.copy()
    query.pop("before", None)
    context = {
        "form": form,
        "page": page,
        "filters": filters,
        "problems": form.problems,
        "query": query,
    }
    return render(request, "scans/audit.html", context)
