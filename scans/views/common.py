"""What every view module shares: the permission decorators and the safe "back to where you were" redirect."""

from collections.abc import Callable
from functools import wraps

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme

# Both roles (Viewers, Operators: migration 0002_roles) hold it; an account without it has no role at all.
ROLE_PERMISSION = "scans.view_scan"


def role_required(permission: str) -> Callable:
    """Let through users holding `permission`; refuse others with a 403.

    An account in neither role gets the no-access page (what to ask for, and Log out) on every URL, instead of
    the "not allowed" page, whose way back would only lead to another refusal. Put it under @login_required.
    """

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def checked(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.user.has_perm(permission):
                return view(request, *args, **kwargs)
            if not request.user.has_perm(ROLE_PERMISSION):
                return render(request, "no_access.html", status=403)
            raise PermissionDenied

        return checked

    return decorator


view_required = role_required("scans.view_scan")
operate_required = role_required("scans.operate_scans")


def back_to(request: HttpRequest, default: str) -> str:
    """The `next` URL posted with a form when it points at this site, else `default`."""
    target = request.POST.get("next", "")
    # Only a path on this site: anything else ("abc" would be taken for a URL name, a NUL breaks the header).
    if not target.startswith("/") or not target.isprintable():
        return default
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return default
