"""Pages of the scans app."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from scans.selectors import refresh_run_latest, scan_list_for_dashboard, scan_status_counts

PAGE_SIZE = 50


@login_required
def scan_list(request: HttpRequest) -> HttpResponse:
    """Every tracked scan with its status, durations, error and last check."""
    page = Paginator(scan_list_for_dashboard(), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "scans/list.html",
        {"page": page, "counts": scan_status_counts(), "last_run": refresh_run_latest()},
    )


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and compose: 200 when the database answers, 503 when it does not."""
    try:
        run = refresh_run_latest()
    except DatabaseError:
        return JsonResponse({"database": "unreachable"}, status=503)
    last = run.started_at.isoformat() if run else None
    return JsonResponse({"database": "ok", "last_refresh": last, "last_outcome": run.outcome if run else None})
