"""Django admin for superusers: search, filters, and the API's own fields read-only."""

from django.contrib import admin
from django.db import DataError, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

from scans.models import Alert, AlertMute, AlertSnooze, AlertSubscription, RefreshRun, Scan, StatusChange


class HostileInputSafeAdmin(admin.ModelAdmin):
    """A list filter the database cannot run (NUL on PostgreSQL, a year past 9999, an int past 64 bits) is a 400.

    The admin builds the query from any field lookup in the query string and runs it only while the page renders,
    after its own checks for bad parameters, so the error is caught here.
    """

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if any("\x00" in value for values in request.GET.lists() for value in values[1]):
            return HttpResponseBadRequest(_REFUSED)
        try:
            # A savepoint, so a query PostgreSQL refuses does not poison the rest of the request's transaction.
            with transaction.atomic():
                response = super().changelist_view(request, extra_context)
                return response.render() if hasattr(response, "render") else response
        except (ValueError, OverflowError, DataError):
            return HttpResponseBadRequest(_REFUSED)


_REFUSED = "This filter cannot be applied: a value is out of range or malformed."


class StatusChangeInline(admin.TabularInline):
    model = StatusChange
    extra = 0
    can_delete = False
    readonly_fields = ("from_status", "to_status", "raw_status", "observed_at")


@admin.register(Scan)
class ScanAdmin(HostileInputSafeAdmin):
    list_display = ("tracking_id", "label", "status", "submitted_at", "ended_at", "last_checked", "archived_at")
    list_select_related = ("poll",)
    list_filter = ("status", "data_source", "archived_at")
    search_fields = ("tracking_id", "label")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    inlines = [StatusChangeInline]
    # Everything the API reports, or the poller keeps, is read-only: only ops' own fields are editable.
    readonly_fields = (
        *Scan.ANSWER_FIELDS,
        "created_at",
        "last_checked",
        "last_changed_at",
        "last_check_error",
        "check_failures",
    )

    @admin.display(description="Last checked", ordering="poll__last_checked_at")
    def last_checked(self, scan: Scan):
        return scan.poll.last_checked_at if hasattr(scan, "poll") else None

    def get_readonly_fields(self, request, obj=None):
        # The tracking ID is chosen once, when the scan is added.
        return (*self.readonly_fields, "tracking_id") if obj else self.readonly_fields


@admin.register(RefreshRun)
class RefreshRunAdmin(HostileInputSafeAdmin):
    list_display = ("started_at", "outcome", "ids_asked", "ids_answered", "changed", "api_calls", "errors")
    list_filter = ("outcome",)
    readonly_fields = [field.name for field in RefreshRun._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(HostileInputSafeAdmin):
    """The outbox, read-only: alerts are written by detection and changed only by sending."""

    list_display = ("created_at", "kind", "subject", "state", "attempts", "sent_at")
    list_filter = ("kind", "state", "is_digest")
    search_fields = ("subject", "scan__tracking_id", "scan__label")
    raw_id_fields = ("scan", "outage", "snooze", "digest")

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Alert._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


admin.site.register(AlertSubscription, HostileInputSafeAdmin)
admin.site.register(AlertMute, HostileInputSafeAdmin)
admin.site.register(AlertSnooze, HostileInputSafeAdmin)
