"""Health endpoint for load balancers, compose and monitors."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from scans.health_checks import system_health


def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database, the broker, the poller and the API are all fine; 503 with the reasons otherwise.

    Answers within about two seconds even when the database or the broker hangs (see scans.health_checks).
    """
    health = system_health(now=timezone.now())
    body = {
        "status": "ok" if health.ok else "fail",
        # Each check's status word at the top level too, for a quick `jq .poller`.
        **{name: check["status"] for name, check in health.checks.items()},
        "checks": health.checks,
        "failing": health.failing,
    }
    return JsonResponse(body, status=200 if health.ok else 503)


def livez(request: HttpRequest) -> HttpResponse:
    """200 whenever this web process can answer at all: what a container or load-balancer health check asks.

    Deliberately blind to the database, the broker and the poller: taking the dashboard out of rotation while
    the API is down would hide it exactly when ops need it. /healthz is the system's health.
    """
    return HttpResponse("ok", content_type="text/plain")
