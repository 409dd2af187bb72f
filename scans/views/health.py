"""Health endpoint for load balancers, compose and monitors."""

from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse

from scans import selectors


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and compose: 200 when the database answers, 503 when it does not."""
    try:
        run = selectors.dashboard_last_run()
    except DatabaseError:
        return JsonResponse({"database": "unreachable"}, status=503)
    last = run.started_at.isoformat() if run else None
    return JsonResponse({"database": "ok", "last_refresh": last, "last_outcome": run.outcome if run else None})
