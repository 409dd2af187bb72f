"""What every view module shares: the permission decorators and the safe "back to where you were" redirect."""

from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest
from django.utils.http import url_has_allowed_host_and_scheme

view_required = permission_required("scans.view_scan", raise_exception=True)
operate_required = permission_required("scans.operate_scans", raise_exception=True)


def back_to(request: HttpRequest, default: str) -> str:
    """The `next` URL posted with a form when it points at this site, else `default`."""
    target = request.POST.get("next", "")
    # Only a path on this site: anything else ("abc" would be taken for a URL name, a NUL breaks the header).
    if not target.startswith("/") or not target.isprintable():
        return default
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return default
